"""End to end: dial and commands published on MQTT reach stand-in phones (real HTTP servers) as
the right authenticated requests, and every one is answered on `<base>/<id>/response`."""

import json
import logging
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bridge.mqtt import Endpoint
from tests.conftest import Mosquitto, RunningBridge, Watcher, free_port, make_config, start_bridge, wait_until
from tests.phone_standin import StandIn

YEALINK = "001565aabbcc"
SNOM = "000413aabbcc"
WAIT = 1.0  # control.timeout in these tests, seconds
PASSWORD = "s3cret-phone"
EXAMPLES = Path(__file__).parent.parent / "examples" / "profiles"

Start = Callable[..., RunningBridge]


@pytest.fixture
def start(mosquitto: Mosquitto, base_topic: str, watcher: Watcher) -> Iterator[Start]:
    """Start a bridge with these [devices] (and other sections), subscribed and answering."""
    started: list[RunningBridge] = []

    def run(
        devices: dict[str, dict[str, object]], control: dict[str, object] | None = None, **more: Any
    ) -> RunningBridge:
        extra = {"devices": devices, "control": {"timeout": WAIT, **(control or {})}, **more}
        config = make_config(base_topic, mosquitto.url, extra)
        started.append(start_bridge(config, Endpoint("127.0.0.1", mosquitto.port)))
        answering(watcher, base_topic)
        return started[-1]

    yield run
    for rb in started:
        rb.stop()


def answering(watcher: Watcher, base: str) -> None:
    """Wait until the bridge's subscriptions are in place: a request published before is lost."""
    topic = f"{base}/bridge/response/health_check"
    for attempt in range(40):
        publish(watcher, f"{base}/bridge/request/health_check", json.dumps({"transaction": attempt}))
        try:
            watcher.wait_for(topic, lambda p, a=attempt: p["transaction"] == a, timeout=0.25)  # type: ignore[misc]
            return
        except AssertionError:
            continue
    raise AssertionError("the bridge never answered a health_check")


def publish(watcher: Watcher, topic: str, payload: str | bytes, retain: bool = False) -> None:
    watcher.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)


def send(watcher: Watcher, base: str, device: str, leaf: str, payload: object) -> dict[str, Any]:
    """Publish a JSON dial or command with a fresh transaction; the response to it."""
    transaction = uuid.uuid4().hex[:8]
    assert isinstance(payload, dict)
    publish(watcher, f"{base}/{device}/{leaf}", json.dumps({**payload, "transaction": transaction}))
    return response_to(watcher, base, device, transaction)


def response_to(watcher: Watcher, base: str, device: str, transaction: object) -> dict[str, Any]:
    found: dict[str, Any] = watcher.wait_for(
        f"{base}/{device}/response", lambda p: p["transaction"] == transaction
    )
    return found


def request(watcher: Watcher, base: str, name: str, payload: dict[str, object]) -> dict[str, Any]:
    transaction = uuid.uuid4().hex[:8]
    publish(watcher, f"{base}/bridge/request/{name}", json.dumps({**payload, "transaction": transaction}))
    found: dict[str, Any] = watcher.wait_for(
        f"{base}/bridge/response/{name}", lambda p: p["transaction"] == transaction
    )
    return found


def device(standin: StandIn, phone_type: str, **more: object) -> dict[str, object]:
    return {
        "phone_type": phone_type,
        "ip": standin.address,
        "username": "admin",
        "password": PASSWORD,
        **more,
    }


def test_a_dial_reaches_yealink_and_snom_as_an_authenticated_request(
    start: Start, phones: Callable[..., StandIn], watcher: Watcher, base_topic: str
) -> None:
    yealink = phones(auth="basic", password=PASSWORD)
    snom = phones(auth="digest", password=PASSWORD, status=302)
    start({YEALINK: device(yealink, "yealink", line="100"), SNOM: device(snom, "snom")})

    began = time.monotonic()
    answer = send(watcher, base_topic, YEALINK, "dial", {"number": "+49 30 1234"})
    elapsed = time.monotonic() - began
    assert answer["command"] == "dial"
    assert (answer["status"], answer["error"], answer["http_status"]) == ("ok", None, 200)
    [seen] = yealink.accepted()
    assert (seen.method, seen.target) == ("GET", "/servlet?key=number=%2B49301234&outgoing_uri=100")
    assert seen.authorization is not None
    assert seen.authorization.startswith("Basic ")
    assert elapsed < WAIT

    answer = send(watcher, base_topic, SNOM, "dial", {"number": "5551234", "line": "200@pbx.example"})
    assert (answer["status"], answer["http_status"]) == ("ok", 302)  # Snom's redirect is its success
    [seen] = snom.accepted()
    assert seen.target == "/command.htm?number=5551234&outgoing_uri=200@pbx.example"
    assert seen.authorization is not None
    assert seen.authorization.startswith("Digest ")
    assert [s.target for s in snom.requests()] == [seen.target] * 2  # the basic try, then digest

    publish(watcher, f"{base_topic}/{YEALINK}/dial", "5550000")  # plain: answered without a transaction
    plain = watcher.wait_for(f"{base_topic}/{YEALINK}/response", lambda p: p["transaction"] is None)
    assert plain["status"] == "ok"
    assert yealink.accepted()[-1].target == "/servlet?key=number=5550000&outgoing_uri=100"


def test_yealink_commands_in_order_with_the_call_id_from_its_hits(
    start: Start, phones: Callable[..., StandIn], watcher: Watcher, base_topic: str
) -> None:
    yealink = phones(auth="digest", password=PASSWORD)
    rb = start({YEALINK: device(yealink, "yealink", auth="digest")})
    hit = f"/incoming_call/yealink?device={YEALINK}&remote=sip:5551234@pbx&callid=abc-1@10.0.0.9"
    assert rb.hit(hit).status_code == 200
    watcher.wait_for(f"{base_topic}/{YEALINK}/call", lambda p: p["state"] == "ringing")
    commands = [
        ("answer", {}, "/servlet?key=ASW:abc-1@10.0.0.9"),
        ("hold", {}, "/servlet?key=F_HOLD"),  # the hits never said the call is talking: no call_id
        ("dnd_on", {}, "/servlet?key=DNDOn"),
        ("dnd_off", {}, "/servlet?key=DNDOff"),
        ("key", {"key": "ok"}, "/servlet?key=OK"),
        ("reject", {}, "/servlet?key=CANCEL:abc-1@10.0.0.9"),
        ("hangup", {}, "/servlet?key=CALLEND"),
    ]
    for name, more, _ in commands:
        publish(
            watcher,
            f"{base_topic}/{YEALINK}/command",
            json.dumps({"command": name, "transaction": name, **more}),
        )
    for name, _, _ in commands:
        answer = response_to(watcher, base_topic, YEALINK, name)
        assert (answer["command"], answer["status"]) == (name, "ok")
    assert [s.target for s in yealink.accepted()] == [target for _, _, target in commands]
    responses = [m.json()["transaction"] for m in watcher.on(f"{base_topic}/{YEALINK}/response")]
    assert responses == [name for name, _, _ in commands]  # answered in the order sent


@pytest.mark.parametrize(
    ("phone_type", "settings", "leaf", "payload", "method", "target", "body"),
    [
        ("snom", {"auth": "digest"}, "command", {"command": "dtmf", "digits": "12#"}, "GET",
         "/command.htm?key_dtmf=12%23", b""),
        ("snom", {}, "command", {"command": "hangup"}, "GET", "/command.htm?RELEASE_ALL_CALLS", b""),
        ("grandstream", {}, "dial", {"number": "*21#5551234"}, "GET",
         f"/cgi-bin/api-make_call?passcode={PASSWORD}&phonenumber=*21%235551234", b""),
        ("grandstream", {}, "command", {"command": "answer"}, "GET",
         f"/cgi-bin/api-phone_operation?passcode={PASSWORD}&cmd=acceptcall", b""),
        ("htek", {"line": "2"}, "dial", {"number": "5551234"}, "GET",
         "/Phone_ActionURL&Command=1&Number=5551234&Account=2", b""),
        ("htek", {}, "command", {"command": "hangup"}, "GET", "/Phone_ActionURL&Command=2", b""),
        ("aastra", {}, "dial", {"number": "5551234"}, "POST", "/",
         b"xml=%3CAastraIPPhoneExecute%3E%3CExecuteItem+URI%3D%22Dial%3A5551234%22%2F%3E"
         b"%3C%2FAastraIPPhoneExecute%3E"),
    ],
)  # fmt: skip
def test_each_vendor_gets_its_request(
    start: Start,
    phones: Callable[..., StandIn],
    watcher: Watcher,
    base_topic: str,
    caplog: pytest.LogCaptureFixture,
    phone_type: str,
    settings: dict[str, object],
    leaf: str,
    payload: dict[str, object],
    method: str,
    target: str,
    body: bytes,
) -> None:
    caplog.set_level(logging.DEBUG)
    auth = None if phone_type in ("grandstream", "aastra") else "digest" if settings.get("auth") else "basic"
    standin = phones(auth=auth, password=PASSWORD)
    start({YEALINK: device(standin, phone_type, **settings)})
    answer = send(watcher, base_topic, YEALINK, leaf, payload)
    assert answer["status"] == "ok", answer
    [seen] = standin.accepted()
    assert (seen.method, seen.target, seen.body) == (method, target, body)
    assert PASSWORD not in caplog.text
    assert all(PASSWORD.encode() not in m.payload for m in watcher.messages)


def test_user_profile_phone_type_end_to_end(
    start: Start, phones: Callable[..., StandIn], watcher: Watcher, base_topic: str
) -> None:
    akuvox = phones(auth="basic", password=PASSWORD)
    start({YEALINK: device(akuvox, "akuvox")}, profiles={"dir": str(EXAMPLES)})
    assert send(watcher, base_topic, YEALINK, "dial", {"number": "100"})["status"] == "ok"
    assert send(watcher, base_topic, YEALINK, "command", {"command": "hangup"})["status"] == "ok"
    answer = send(watcher, base_topic, YEALINK, "command", {"command": "answer"})
    assert answer["error"] == "no method for answer on akuvox phones"
    assert [s.target for s in akuvox.accepted()] == [
        "/fcgi/do?action=MakeCall&number=100",
        "/fcgi/do?action=CallEnd",
    ]


INJECTIONS: list[tuple[str, dict[str, object], str]] = [
    ("dial", {"number": "555;reboot"}, "invalid number"),
    ("dial", {"number": "1&key=Reboot"}, "invalid number"),
    ("dial", {"number": "555\r\nX-Injected: 1"}, "invalid number"),
    ("dial", {"number": "5" * 300}, "invalid number"),
    ("dial", {"number": "../../servlet?key=Reboot"}, "invalid number"),
    ("dial", {"number": "sip:a@pbx;transport=tcp"}, "invalid number"),
    ("dial", {"number": "555", "line": "1&key=Reboot"}, "invalid line"),
    ("command", {"command": "key", "key": "Reboot"}, "'Reboot' is not a key of yealink phones"),
    ("command", {"command": "key", "key": "1&key=Reboot"}, "is not a key of yealink phones"),
    ("command", {"command": "reboot"}, "unknown command 'reboot'"),
    ("command", {"command": "dtmf", "digits": "1;Reboot"}, "invalid digits"),
    ("command", {"command": "dtmf", "digits": "12"}, "no method for dtmf on yealink phones"),
]


def test_injections_never_reach_the_phone(
    start: Start, phones: Callable[..., StandIn], watcher: Watcher, base_topic: str
) -> None:
    yealink = phones()
    start({YEALINK: device(yealink, "yealink")})
    for leaf, payload, reason in INJECTIONS:
        answer = send(watcher, base_topic, YEALINK, leaf, payload)
        assert answer["status"] == "error"
        assert reason in answer["error"], answer
        assert answer["http_status"] is None

    def plain_errors() -> list[str]:
        answers = [m.json() for m in watcher.on(f"{base_topic}/{YEALINK}/response")]
        return [a["error"] for a in answers if a["transaction"] is None]

    for count, plain in enumerate(("555;reboot", "1&key=Reboot", "555\r\nkey=Reboot", "../x"), start=1):
        publish(watcher, f"{base_topic}/{YEALINK}/dial", plain)
        wait_until(lambda n=count: len(plain_errors()) == n, what="the answer to a plain dial")  # type: ignore[misc]
        assert plain_errors()[-1].startswith(f"invalid number {plain!r}")
    assert yealink.requests() == []


def test_a_dead_or_slow_phone_is_answered_within_the_timeout_and_the_bridge_carries_on(
    start: Start, phones: Callable[..., StandIn], watcher: Watcher, base_topic: str
) -> None:
    slow = phones(hold=True)
    good = phones()
    dead = f"127.0.0.1:{free_port()}"  # nothing listens there
    rb = start(
        {
            YEALINK: {"phone_type": "yealink", "ip": dead},
            SNOM: {"phone_type": "snom", "ip": slow.address},
            "lobby": {"phone_type": "snom", "ip": good.address},
        }
    )
    began = time.monotonic()
    answer = send(watcher, base_topic, YEALINK, "dial", {"number": "5551234"})
    assert answer["error"].startswith(f"phone unreachable at {dead}"), answer
    assert time.monotonic() - began < WAIT

    began = time.monotonic()
    answer = send(watcher, base_topic, SNOM, "dial", {"number": "5551234"})
    took = time.monotonic() - began
    slow.release.set()
    assert answer["error"] == f"timeout: the phone at {slow.address} did not answer within 1 s"
    assert answer["http_status"] is None
    assert WAIT * 0.9 < took < WAIT + 1.0

    assert rb.hit(f"/off_hook/snom?device={SNOM}").status_code == 200
    watcher.wait_for(f"{base_topic}/{SNOM}/event", lambda p: p["event_type"] == "off_hook")
    assert send(watcher, base_topic, "lobby", "command", {"command": "answer"})["status"] == "ok"
    assert [s.target for s in good.accepted()] == ["/command.htm?key=ENTER"]


@pytest.mark.parametrize(
    ("settings", "error", "status"),
    [
        ({"auth": "basic", "password": "other"}, "401 wrong credentials", 401),
        ({"status": 403}, "403 refused by the phone; add the bridge's address to the phone's Action", 403),
        ({"status": 500}, "HTTP 500 from the phone", 500),
        ({"status": 302}, "HTTP 302 from the phone: a redirect, not followed", 302),
    ],
)  # fmt: skip
def test_http_failures_are_answered_with_the_status(
    start: Start,
    phones: Callable[..., StandIn],
    watcher: Watcher,
    base_topic: str,
    settings: dict[str, object],
    error: str,
    status: int,
) -> None:
    standin = phones(**settings)
    start({YEALINK: device(standin, "yealink")})
    answer = send(watcher, base_topic, YEALINK, "dial", {"number": "5551234"})
    assert answer["status"] == "error"
    assert answer["error"].startswith(error), answer
    assert answer["http_status"] == status
    assert len(standin.requests()) == 1  # no redirect followed, no second guess at a password


def test_grandstream_error_body_and_missing_password(
    start: Start, phones: Callable[..., StandIn], watcher: Watcher, base_topic: str
) -> None:
    refusing = phones(body='{"response":"error","body":false}')
    start(
        {
            YEALINK: device(refusing, "grandstream"),
            SNOM: {"phone_type": "grandstream", "ip": refusing.address},
        }
    )
    answer = send(watcher, base_topic, YEALINK, "dial", {"number": "5551234"})
    assert answer["error"].startswith("the phone refused the command")
    assert answer["http_status"] == 200
    answer = send(watcher, base_topic, SNOM, "dial", {"number": "5551234"})
    assert (
        answer["error"] == "dial on grandstream phones needs password (set [devices.<id>] username/password)"
    )
    assert len(refusing.requests()) == 1


def test_unknown_device_no_address_and_no_method(
    start: Start, phones: Callable[..., StandIn], watcher: Watcher, base_topic: str
) -> None:
    start({"lobby": {"phone_type": "yealink"}, "hall": {"phone_type": "generic", "ip": "127.0.0.1:9"}})
    answer = send(watcher, base_topic, "nosuchphone", "dial", {"number": "5551234"})
    assert answer == {
        "command": "dial",
        "status": "error",
        "error": "unknown device 'nosuchphone'",
        "http_status": None,
        "transaction": answer["transaction"],
    }
    answer = send(watcher, base_topic, "lobby", "command", {"command": "hangup"})
    assert answer["error"].startswith("no address known for lobby")
    answer = send(watcher, base_topic, "hall", "dial", {"number": "5551234"})
    assert answer["error"] == "no method for dial on generic phones"


def test_a_retained_command_is_ignored(
    start: Start, phones: Callable[..., StandIn], watcher: Watcher, base_topic: str
) -> None:
    yealink = phones()
    topic = f"{base_topic}/{YEALINK}/dial"
    publish(watcher, topic, "5550001", retain=True)
    try:
        start({YEALINK: device(yealink, "yealink")})
        assert send(watcher, base_topic, YEALINK, "dial", {"number": "5550002"})["status"] == "ok"
        assert [s.target for s in yealink.requests()] == ["/servlet?key=number=5550002"]
    finally:
        publish(watcher, topic, b"", retain=True)


def test_a_full_queue_is_answered_and_the_rest_go_in_order(
    start: Start, phones: Callable[..., StandIn], watcher: Watcher, base_topic: str
) -> None:
    slow = phones(hold=True)
    start({YEALINK: device(slow, "yealink")}, control={"timeout": 10.0, "queue_size": 2})
    for n in range(4):
        publish(
            watcher, f"{base_topic}/{YEALINK}/dial", json.dumps({"number": f"55500{n}", "transaction": n})
        )
    for n in (2, 3):
        busy = response_to(watcher, base_topic, YEALINK, n)
        assert busy["error"] == "busy: 2 commands for this phone are already queued or being sent; try again"
    slow.release.set()
    for n in (0, 1):
        assert response_to(watcher, base_topic, YEALINK, n)["status"] == "ok"
    assert [s.target for s in slow.requests()] == ["/servlet?key=number=555000", "/servlet?key=number=555001"]
    answers = [m.json()["transaction"] for m in watcher.on(f"{base_topic}/{YEALINK}/response")]
    assert answers == [2, 3, 0, 1]


def test_tls_with_a_self_signed_certificate(
    start: Start, phones: Callable[..., StandIn], watcher: Watcher, base_topic: str, tmp_path: Path
) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed: it makes the test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    secure = phones(certificate=(cert, key))
    start(
        {
            YEALINK: device(secure, "yealink", tls=True, verify_tls=False),
            SNOM: device(secure, "snom", tls=True),
        }
    )
    assert send(watcher, base_topic, YEALINK, "command", {"command": "dnd_on"})["status"] == "ok"
    answer = send(watcher, base_topic, SNOM, "command", {"command": "answer"})
    assert answer["error"].startswith("TLS certificate of the phone at 127.0.0.1:")
    assert [s.target for s in secure.requests()] == ["/servlet?key=DNDOn"]


def test_devices_and_calls_requests(start: Start, watcher: Watcher, base_topic: str) -> None:
    rb = start({})
    for event in ("incoming_call", "call_established", "call_terminated"):
        assert rb.hit(f"/{event}/yealink?device={YEALINK}&remote=5551234&callid=c1").status_code == 200
    watcher.wait_for(f"{base_topic}/{YEALINK}/history", lambda p: len(p) == 1)
    devices = request(watcher, base_topic, "devices", {})
    assert devices["status"] == "ok"
    assert [d["id"] for d in devices["data"]] == [YEALINK]
    calls = request(watcher, base_topic, "calls", {"device": YEALINK, "limit": 5})
    assert [(c["number"], c["result"]) for c in calls["data"]] == [("5551234", "answered")]
    assert request(watcher, base_topic, "calls", {})["data"] == calls["data"]
    assert (
        request(watcher, base_topic, "calls", {"limit": 0})["error"]
        == "limit must be an integer from 1 to 1000"
    )
    assert request(watcher, base_topic, "calls", {"device": "nope"})["status"] == "error"


def test_a_hit_is_answered_while_a_phone_request_hangs(
    start: Start, phones: Callable[..., StandIn], watcher: Watcher, base_topic: str
) -> None:
    slow = phones(hold=True)  # takes the request and answers only when released
    rb = start({SNOM: {"phone_type": "snom", "ip": slow.address}}, {"timeout": 30})
    transaction = uuid.uuid4().hex[:8]
    publish(
        watcher, f"{base_topic}/{SNOM}/dial", json.dumps({"number": "5551234", "transaction": transaction})
    )
    wait_until(lambda: len(slow.requests()) == 1, what="the dial to reach the phone")
    for event in ("offhook", "outgoingcall", "callestablished"):
        assert rb.hit(f"/{event}/snom?device={SNOM}&remote=5551234").status_code == 200
    call = watcher.wait_for(f"{base_topic}/{SNOM}/call", lambda p: p["state"] == "talking")
    assert call["number"] == "5551234"
    assert watcher.on(f"{base_topic}/{SNOM}/response") == []  # the phone still holds the dial
    slow.release.set()
    assert response_to(watcher, base_topic, SNOM, transaction)["status"] == "ok"
