"""Bad input gets a clear refusal, changes no state, and never reaches a topic level."""

import contextlib
import random
import re
import socket
import time
from collections.abc import Iterator
from urllib.parse import parse_qsl, quote

import pytest

from bridge import httpserver
from bridge.app import decode_params
from bridge.mqtt import Endpoint
from bridge.service import Refused
from tests.conftest import TIMEOUT, Mosquitto, RunningBridge, Watcher, make_config, start_bridge, wait_until

MAC = "001565aabbcc"


@pytest.fixture
def configured(
    request: pytest.FixtureRequest, mosquitto: Mosquitto, base_topic: str, watcher: Watcher
) -> Iterator[RunningBridge]:
    extra: dict[str, dict[str, object]] = request.param
    rb = start_bridge(make_config(base_topic, mosquitto.url, extra), Endpoint("127.0.0.1", mosquitto.port))
    yield rb
    rb.stop()


@pytest.mark.parametrize("configured", [{"http": {"token": "s3cret-t0ken"}}], indirect=True)
def test_token(configured: RunningBridge, watcher: Watcher) -> None:
    rb = configured
    for query in (f"device={MAC}", f"device={MAC}&token=wrong"):
        response = rb.hit(f"/offhook/yealink?{query}")
        assert response.status_code == 403
        assert response.text.strip() == "missing or wrong token"
    assert rb.bridge.devices == {}
    assert rb.hit(f"/offhook/yealink?device={MAC}&token=s3cret-t0ken").status_code == 200
    event = watcher.wait_for(f"{rb.base}/{MAC}/event")
    assert event["raw"]["query"] == f"device={MAC}&token=***"
    assert "token" not in event["extra"]
    refusals = [
        m.json() for m in watcher.on(f"{rb.base}/bridge/event") if m.json()["type"] == "request_refused"
    ]
    assert [r["data"]["status"] for r in refusals] == [403, 403]
    assert all("s3cret" not in m.payload.decode() for m in watcher.messages)


@pytest.mark.parametrize("configured", [{"http": {"allowed_networks": ["10.0.0.0/8"]}}], indirect=True)
def test_source_outside_allowed_networks(configured: RunningBridge, watcher: Watcher) -> None:
    for path in (f"/offhook/yealink?device={MAC}", "/healthz"):
        response = configured.hit(path)
        assert response.status_code == 403
        assert "allowed_networks" in response.text
    assert configured.bridge.devices == {}


@pytest.mark.parametrize("configured", [{"http": {"allowed_networks": ["10.0.0.0/8"]}}], indirect=True)
def test_a_reverse_proxy_on_the_same_machine_passes_on_the_phones_address(
    configured: RunningBridge, watcher: Watcher
) -> None:
    """uvicorn takes X-Forwarded-For from 127.0.0.1 and ::1 (docs/web.md): behind a proxy there,
    the phone's own address is what `allowed_networks` and the device id see."""
    proxied = configured.hit("/offhook/yealink", headers={"X-Forwarded-For": "10.1.2.3"})
    assert proxied.status_code == 200
    event = watcher.wait_for(f"{configured.base}/ip-10-1-2-3/event")
    assert event["mac_resolved"] is False
    refused = configured.hit("/offhook/yealink", headers={"X-Forwarded-For": "192.168.1.5"})
    assert refused.status_code == 403  # outside the allowed networks, proxied or not


@pytest.mark.parametrize("configured", [{"http": {"rate_limit": 2}}], indirect=True)
def test_rate_limit(configured: RunningBridge, watcher: Watcher) -> None:
    statuses = [configured.hit(f"/tick/yealink?device={MAC}").status_code for _ in range(6)]
    assert statuses[:2] == [200, 200]
    assert 429 in statuses


@pytest.fixture
def hurried(
    monkeypatch: pytest.MonkeyPatch, mosquitto: Mosquitto, base_topic: str, watcher: Watcher
) -> Iterator[RunningBridge]:
    """A bridge that gives a request 1 s to come in whole (10 s in use)."""
    monkeypatch.setattr(httpserver, "REQUEST_WITHIN", 1.0)
    rb = start_bridge(make_config(base_topic, mosquitto.url), Endpoint("127.0.0.1", mosquitto.port))
    yield rb
    rb.stop()


def read_all(conn: socket.socket) -> bytes:
    """What the bridge sends until it closes the connection (a timeout if it never does)."""
    conn.settimeout(TIMEOUT)
    data = b""
    while chunk := conn.recv(4096):
        data += chunk
    return data


def test_a_request_that_never_comes_in_whole_is_refused_408_and_closed(
    hurried: RunningBridge, watcher: Watcher
) -> None:
    """A connection that sends nothing, and one that sends the start of a hit a byte at a time,
    more often than uvicorn's keep-alive timeout: uvicorn alone kept both for as long as their
    peers did. The deadline runs from the connection's start, not from its last byte."""
    rb = hurried
    with (
        socket.create_connection(("127.0.0.1", rb.port)) as idle,
        socket.create_connection(("127.0.0.1", rb.port)) as trickle,
    ):
        began = time.monotonic()
        for byte in b"GET ":  # the last at 0.75 s: a deadline from there would come at 1.75 s
            trickle.sendall(bytes([byte]))
            time.sleep(0.25)
        answers = [read_all(idle), read_all(trickle)]
        assert time.monotonic() - began < 1.5
    for answer in answers:
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408 ")
        assert body == b"no complete request within 1 s\n"

    def refusals() -> list[dict[str, object]]:
        events = [m.json() for m in watcher.on(f"{rb.base}/bridge/event")]
        return [e["data"] for e in events if e["type"] == "request_refused"]

    wait_until(lambda: len(refusals()) == 2, what="two request_refused events")
    assert [(r["status"], r["source"]) for r in refusals()] == [(408, "127.0.0.1")] * 2
    metrics = rb.hit("/metrics").text
    assert 'amego_refusals_total{reason="request_timeout",status="408"} 2.0' in metrics
    assert rb.bridge.devices == {}  # the trickled hit changed nothing
    assert rb.hit(f"/offhook/yealink?device={MAC}").status_code == 200  # a whole one still goes in


def test_a_kept_alive_connection_gives_each_request_its_own_deadline(hurried: RunningBridge) -> None:
    """The deadline starts again with each request: a connection that sends hits whole, well
    spaced, is never cut (2.4 s on one connection here, with a deadline of 1 s)."""
    with socket.create_connection(("127.0.0.1", hurried.port)) as conn:
        conn.settimeout(TIMEOUT)
        for n in range(4):
            conn.sendall(f"GET /offhook/yealink?device={MAC}&n={n} HTTP/1.1\r\nHost: bridge\r\n\r\n".encode())
            answer = b""
            while not answer.endswith(b"\r\n\r\nOK"):
                chunk = conn.recv(4096)
                assert chunk, f"the bridge closed the connection before answering hit {n}"
                answer += chunk
            assert answer.startswith(b"HTTP/1.1 200 ")
            time.sleep(0.6)


def test_body_too_large_and_wrong_body_type(running: RunningBridge, watcher: Watcher) -> None:
    big = running.hit("/offhook/yealink", method="POST", content=b"a=" + b"x" * 70_000)
    assert big.status_code == 413
    json_body = running.hit(
        "/offhook/yealink", method="POST", content=b"{}", headers={"content-type": "application/json"}
    )
    assert json_body.status_code == 400
    assert running.bridge.devices == {}


ALPHABET = [
    "a", "Z", "0", "9", "/", "+", "#", "$", "&", "=", ";", "%2F", "%23", "%2B", "%00", "%0A", "%0D",
    "%", "%zz", "%C3%A9", "%FF", " ", "sip:", "@", "<", ">", '"', ":", "-", "_", ".", "..", "\u00e9",
    "$mac", "$$X$$", "device=", "callid=", "remote=", "token=", "line=", "&&",
]  # fmt: skip
EVENTS = ["offhook", "incomingcall", "callterminated", "x%2Fy", "%2B", "a+b", "tick", "on-hook"]
TYPES = ["yealink", "snom", "nope", "a%23b", "Gen%2Beric"]
TOPIC = re.compile(
    r"^{base}/(bridge/(state|info|devices|event|log)"
    r"|([0-9a-f]{{12}}|ip-[0-9a-z-]+)/(availability|status|call|event|history))$"
)


def test_fuzzed_hits_never_fail_or_inject_a_topic_level(running: RunningBridge, watcher: Watcher) -> None:
    rng = random.Random(20261126)
    statuses: list[int] = []
    for _ in range(300):
        query = "".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 40)))
        if rng.random() < 0.5:
            query = (
                f"device={rng.choice(['001565aabbcc', '00:15:65:AA:BB:CD', '%2F%2B%23', 'a/b#'])}&" + query
            )
        path = f"/{rng.choice(EVENTS)}/{rng.choice(TYPES)}?{query}"
        response = running.hit(path)
        assert response.status_code < 500, (path, response.status_code, response.text)
        statuses.append(response.status_code)
    assert statuses.count(200) > 50  # the fuzz reaches the parser, not only the refusals
    marker = running.hit(f"/tick/yealink?device={MAC}&seq=last")
    assert marker.status_code == 200
    watcher.wait_for(f"{running.base}/{MAC}/event", lambda p: p["extra"].get("seq") == "last")
    pattern = re.compile(TOPIC.pattern.format(base=re.escape(running.base)))
    bad = {m.topic for m in watcher.messages if not pattern.match(m.topic)}
    assert not bad


def test_values_with_slashes_and_wildcards_stay_inside_payloads(
    running: RunningBridge, watcher: Watcher
) -> None:
    nasty = quote("a/b/+/#\n")
    assert running.hit(f"/incomingcall/yealink?device={MAC}&remote={nasty}&line={nasty}").status_code == 200
    call = watcher.wait_for(f"{running.base}/{MAC}/call", lambda p: p["state"] == "ringing")
    assert call["number"] == "a/b/+/#"
    assert all(m.topic.count("/") == 2 for m in watcher.messages)


def test_warnings_reach_bridge_log(running: RunningBridge, watcher: Watcher) -> None:
    assert running.hit("/offhook/yealink?remote=%zz").status_code == 400
    log_topic = f"{running.base}/bridge/log"
    entry = watcher.wait_for(log_topic, lambda p: "invalid percent-encoding" in p["message"])
    assert entry["level"] == "warning"
    assert entry["time"].endswith("Z")
    assert not watcher.on(f"{running.base}/bridge/log")[0].retain


def test_query_strings_decode_as_parse_qsl_decodes_them() -> None:
    """`decode_params` splits and decodes by hand (parse_qsl's generality cost a tenth of a hit's
    parsing): for every string, the pairs parse_qsl gives, or a 400 where parse_qsl fails or a
    `%` starts no escape (which parse_qsl would pass through as it is)."""
    rng = random.Random(7)
    pieces = ["a", "b", "=", "&", "&&", "+", "%20", "%2B", "%26", "%3D", "%C3%A9", "é", "%zz", "%", "%C3"]
    corpus = ["", "&", "=", "a", "a=", "=b", "a=b=c", "a&&b", "device=0015651234ab&remote=%2B49+30"]
    corpus += ["".join(rng.choice(pieces) for _ in range(rng.randint(1, 12))) for _ in range(3000)]
    outcomes = {"pairs": 0, "refused": 0}
    for text in corpus:
        expected: list[tuple[str, str]] | None = None
        if not re.search("%(?![0-9A-Fa-f]{2})", text):
            with contextlib.suppress(UnicodeDecodeError, ValueError):
                expected = parse_qsl(text, keep_blank_values=True, errors="strict")
        if expected is None:
            with pytest.raises(Refused) as refused:
                decode_params(text.encode())
            assert refused.value.status == 400, text
            outcomes["refused"] += 1
        else:
            assert decode_params(text.encode()) == expected, text
            outcomes["pairs"] += 1
    assert min(outcomes.values()) > 500  # both kinds well represented
