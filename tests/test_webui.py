"""The status page's HTTP side against a real bridge: JSON and CSV APIs, pages, routes, secrets."""

import csv
import io
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from bridge.mqtt import Endpoint
from tests.conftest import (
    TIMEOUT,
    Mosquitto,
    RunningBridge,
    Watcher,
    free_port,
    make_config,
    start_bridge,
    unique_base,
    wait_until,
)

A, B = "00:15:65:aa:bb:01", "00:15:65:aa:bb:02"
IDA, IDB = "001565aabb01", "001565aabb02"


def send(rb: RunningBridge, path: str) -> None:
    response = rb.hit(path)
    assert response.status_code == 200, response.text


def answered_call(rb: RunningBridge, device: str, number: str, name: str) -> None:
    send(rb, f"/incomingcall/yealink?device={device}&local=100&remote={number}&displayremote={name}")
    send(rb, f"/callestablished/yealink?device={device}&local=100&remote={number}")
    send(rb, f"/callterminated/yealink?device={device}&local=100&remote={number}")


def missed_call(rb: RunningBridge, device: str, number: str, name: str) -> None:
    send(rb, f"/incomingcall/yealink?device={device}&local=100&remote={number}&displayremote={name}")
    send(rb, f"/missedcall/yealink?device={device}&local=100&remote={number}")


@pytest.fixture
def office(running: RunningBridge, watcher: Watcher) -> RunningBridge:
    """Phone A answered a call from Alice, then missed one from Bob; phone B missed Carol."""
    answered_call(running, A, "5551234", "Alice")
    missed_call(running, A, "5550000", "Bob")
    missed_call(running, B, "5557777", "Carol")
    return running


def calls(rb: RunningBridge, query: str = "") -> list[dict[str, object]]:
    response = rb.hit("/api/calls" + query)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    result: list[dict[str, object]] = response.json()
    return result


def test_api_devices_lists_every_phone_with_status_and_call(running: RunningBridge) -> None:
    assert running.hit("/api/devices").json() == []
    send(running, f"/offhook/yealink?device={A}&local=sip:100@pbx&model=SIP-T46S&firmware=66.86")
    send(running, f"/incomingcall/snom?device={B}&local=101&remote=5551234&displayremote=Alice")
    devices = {d["id"]: d for d in running.hit("/api/devices").json()}
    assert set(devices) == {IDA, IDB}
    a, b = devices[IDA], devices[IDB]
    assert a["mac"] == A
    assert a["name"] == IDA
    assert a["online"] is True
    assert a["status"]["model"] == "SIP-T46S"
    assert a["status"]["hook"] == "off"
    assert a["call"]["state"] == "offhook"
    assert b["status"]["phone_type"] == "snom"
    assert b["call"]["state"] == "ringing"
    assert b["call"]["number"] == "5551234"
    assert b["call"]["name"] == "Alice"


def test_api_calls_json_newest_first_with_filters(office: RunningBridge) -> None:
    everything = calls(office)
    assert [(c["number"], c["result"]) for c in everything] == [
        ("5557777", "missed"),
        ("5550000", "missed"),
        ("5551234", "answered"),
    ]
    alice = everything[-1]
    assert alice["device"] == IDA
    assert alice["name"] == "Alice"
    assert alice["answered"] is not None
    assert [c["number"] for c in calls(office, "?result=missed")] == ["5557777", "5550000"]
    assert [c["number"] for c in calls(office, f"?device={A}")] == [
        "5550000",
        "5551234",
    ]  # a MAC, any spelling
    assert [c["number"] for c in calls(office, f"?device={IDB}&result=missed")] == ["5557777"]
    assert [c["number"] for c in calls(office, "?limit=1")] == ["5557777"]
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).date().isoformat()
    assert calls(office, f"?since={tomorrow}") == []
    assert len(calls(office, "?since=2000-01-01")) == 3


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("?result=lost", "result: one of answered, missed"),
        ("?since=yesterday", "since: an ISO 8601 date or time"),
        ("?limit=0", "limit: a whole number from 1 to 10000"),
        ("?device=a/b", "device: not a device id or MAC"),
    ],
)
def test_api_calls_says_which_filter_is_wrong(running: RunningBridge, query: str, reason: str) -> None:
    response = running.hit("/api/calls" + query)
    assert response.status_code == 400
    assert reason in response.json()["error"]


def test_api_calls_csv_download(office: RunningBridge) -> None:
    send(office, f"/incomingcall/yealink?device={B}&local=101&remote=5552222&displayremote=%3DHYPERLINK(1)")
    send(office, f"/callterminated/yealink?device={B}&local=101&remote=5552222")
    response = office.hit("/api/calls?format=csv&device=" + IDB)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert "attachment" in response.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert [(r["number"], r["result"], r["phone"]) for r in rows] == [
        ("5552222", "missed", IDB),
        ("5557777", "missed", IDB),
    ]
    assert rows[0]["name"] == "'=HYPERLINK(1)"  # a spreadsheet shows it as text, never runs it
    assert rows[1]["name"] == "Carol"
    assert rows[1]["started"].endswith("Z")


def test_call_log_page_filters(office: RunningBridge) -> None:
    page = office.hit("/calls?result=answered")
    assert page.status_code == 200
    assert "text/html" in page.headers["content-type"]
    assert "Alice" in page.text
    assert "Bob" not in page.text
    assert 'href="/api/calls?format=csv&amp;result=answered"' in page.text
    bad = office.hit("/calls?since=soon")
    assert bad.status_code == 400
    assert "since: an ISO 8601 date or time" in bad.text


def test_ui_routes_are_not_action_url_hits(running: RunningBridge) -> None:
    for path in ("/setup/yealink", "/api/calls", "/api/devices", "/setup/nosuchphone", "/api/nothing"):
        running.hit(path)
    unknown = running.hit("/api/nothing")
    assert unknown.status_code == 404
    assert unknown.json() == {"error": "no API route /api/nothing"}
    assert running.hit("/setup/nosuchphone").status_code == 404
    assert running.hit("/api/devices").json() == []  # none of them made a phone
    send(running, f"/offhook/yealink?device={A}")  # and Action URLs still work
    assert [d["id"] for d in running.hit("/api/devices").json()] == [IDA]


def test_event_stream_sends_hits_and_phone_changes(running: RunningBridge) -> None:
    send(running, f"/offhook/yealink?device={A}")
    with (
        httpx.Client(base_url=running.url, timeout=TIMEOUT) as client,
        client.stream("GET", "/api/events", headers={"Last-Event-ID": "1"}) as stream,
    ):
        assert stream.headers["content-type"].startswith("text/event-stream")
        lines = stream.iter_lines()
        send(running, f"/incomingcall/yealink?device={A}&remote=5551234&displayremote=Alice")
        seen: list[str] = []
        for line in lines:
            seen.append(line)
            text = "\n".join(seen)
            if '"state": "ringing"' in text and '"seq": 2' in text:
                break
    text = "\n".join(seen)
    assert "id: 1\n" not in text  # the browser had hit 1 already
    assert "id: 2\nevent: hit\n" in text
    assert "event: device\n" in text


@pytest.fixture
def secretive(mosquitto: Mosquitto, base_topic: str) -> Iterator[RunningBridge]:
    extra: Mapping[str, Mapping[str, object]] = {
        "mqtt": {"url": f"mqtt://bridgeuser:mqtt-hunter2@127.0.0.1:{mosquitto.port}"},
        "devices": {IDA: {"name": "Front desk", "username": "admin", "password": "phone-hunter2"}},
        "http": {"token": "tok-hunter2"},
    }
    rb = start_bridge(make_config(base_topic, mosquitto.url, extra), Endpoint("127.0.0.1", mosquitto.port))
    yield rb
    rb.stop()


def test_no_secret_reaches_a_page_but_the_token_on_setup(secretive: RunningBridge) -> None:
    send(secretive, f"/offhook/yealink?device={A}&token=tok-hunter2")
    send(secretive, f"/onhook/yealink?device={A}&token=tok-hunter2")
    assert secretive.hit(f"/onhook/yealink?device={A}&token=wrong-hunter2").status_code == 403
    for path in ("/", "/debug", "/calls", "/setup", "/api/devices", "/api/calls", "/api/calls?format=csv"):
        text = secretive.hit(path).text
        assert "hunter2" not in text, path
    setup = secretive.hit("/setup/yealink").text
    assert "token=tok-hunter2" in setup
    assert "mqtt-hunter2" not in setup
    assert "phone-hunter2" not in setup
    assert "Front desk" in secretive.hit("/").text


def test_allowed_networks_apply_to_the_pages(mosquitto: Mosquitto, base_topic: str) -> None:
    config = make_config(base_topic, mosquitto.url, {"http": {"allowed_networks": ["10.0.0.0/8"]}})
    rb = start_bridge(config, Endpoint("127.0.0.1", mosquitto.port))
    try:
        for path in ("/", "/setup/yealink", "/api/devices", "/api/events"):
            response = rb.hit(path)
            assert response.status_code == 403, path
            assert response.text == "source address not in http.allowed_networks\n"
    finally:
        rb.stop()


def test_the_bridge_stops_at_once_with_a_status_page_open(mosquitto: Mosquitto, tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "config.toml"
    config.write_text(
        f'[http]\nhost = "127.0.0.1"\nport = {port}\n[mqtt]\nurl = "{mosquitto.url}"\n'
        f'base_topic = "{unique_base()}"\n[arp]\nenabled = false\n'
    )
    with subprocess.Popen(
        [sys.executable, "-m", "bridge", "run", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    ) as bridge:
        try:
            wait_until(lambda: answers(port), what="the bridge to listen")
            with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as page:
                page.sendall(b"GET /api/events HTTP/1.1\r\nHost: bridge\r\n\r\n")
                assert b"text/event-stream" in page.recv(4096)
                started = time.monotonic()
                bridge.send_signal(signal.SIGTERM)
                _, log = bridge.communicate(timeout=TIMEOUT)
                assert bridge.returncode == 0
                assert time.monotonic() - started < 2.9  # uvicorn gives up waiting on it after 3 s
                while page.recv(4096):  # the stream ended, and the connection with it
                    pass
            assert b"Traceback" not in log
            assert b"graceful shutdown exceeded" not in log
        finally:
            if bridge.poll() is None:
                bridge.kill()


def answers(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
