"""End to end: Action URL hits over HTTP in, MQTT out, against a real private mosquitto."""

import pytest

from tests.conftest import RunningBridge, Watcher

# The core scenarios, against mosquitto and against the broker the bridge embeds.
pytestmark = pytest.mark.parametrize("broker", ["mosquitto", "embedded"], indirect=True)

MAC = "001565aabbcc"
DEVICE = "00:15:65:AA:BB:CC"


def url(template: str, **values: str) -> str:
    """A seed URL as the phone sends it: each $variable replaced by its value."""
    for name in sorted(values, key=len, reverse=True):
        template = template.replace(f"${name}", values[name])
    return template


# The ten Yealink URLs of Phone Amego's page, exactly as it documents them (after `$server`).
SEED = {
    "off_hook": "/offhook/yealink?device=$mac&local=$local&model=$model",
    "on_hook": "/onhook/yealink?device=$mac&local=$local",
    "incoming_call": (
        "/incomingcall/yealink?device=$mac&local=$local&remote=$remote&displayremote=$display_remote"
    ),
    "outgoing_call": (
        "/outgoingcall/yealink?device=$mac&local=$local&remote=$remote&displayremote=$display_remote"
    ),
    "call_established": "/callestablished/yealink?&device=$mac&local=$local",
    "call_terminated": "/callterminated/yealink?device=$mac&local=$local",
    "log_on": "/logon/yealink?device=$mac&local=$local",
    "log_off": "/logoff/yealink?device=$mac&local=$local",
    "registered": "/registered/yealink?device=$mac&local=$local",
    "register_failed": "/registerfailed/yealink?device=$mac&local=$local",
}
VALUES = {
    "mac": DEVICE,
    "local": "sip:100@pbx.example",
    "model": "SIP-T46S",
    "remote": "sip:5551234@pbx.example",
    "display_remote": "Alice",
}


def send(rb: RunningBridge, event: str, **overrides: str) -> None:
    response = rb.hit(url(SEED[event], **(VALUES | overrides)))
    assert response.status_code == 200, response.text
    assert response.text == "OK"


def test_each_seed_url_gives_its_event(running: RunningBridge, watcher: Watcher) -> None:
    base = running.base
    for event in SEED:
        send(running, event)
        payload = watcher.wait_for(f"{base}/{MAC}/event", lambda p, e=event: p["event_type"] == e)  # type: ignore[misc]
        assert payload["device"] == MAC
        assert payload["phone_type"] == "yealink"
        assert payload["mac_resolved"] is True
        assert payload["raw"]["path"] == SEED[event].split("?")[0]


def test_seed_urls_set_status_and_lines(running: RunningBridge, watcher: Watcher) -> None:
    base = running.base
    send(running, "off_hook")
    status = watcher.wait_for(f"{base}/{MAC}/status", lambda p: p["hook"] == "off")
    assert status["model"] == "SIP-T46S"
    assert status["phone_type"] == "yealink"
    send(running, "registered")
    watcher.wait_for(f"{base}/{MAC}/status", lambda p: p["lines"] == {"100": "registered"})
    send(running, "register_failed")
    watcher.wait_for(f"{base}/{MAC}/status", lambda p: p["lines"] == {"100": "failed"})
    send(running, "log_off")
    watcher.wait_for(f"{base}/{MAC}/status", lambda p: p["lines"] == {"100": "logged_off"})
    availability = watcher.wait_for(f"{base}/{MAC}/availability")
    assert availability == {"state": "online"}
    late = Watcher(watcher.port, f"{base}/{MAC}/#")
    try:
        status = late.wait_for(f"{base}/{MAC}/status")
        assert status["lines"] == {"100": "logged_off"}
        assert all(m.retain for m in late.on(f"{base}/{MAC}/status"))
        assert late.wait_for(f"{base}/{MAC}/availability") == {"state": "online"}
        assert late.on(f"{base}/{MAC}/availability")[0].retain
        assert late.on(f"{base}/{MAC}/event") == []  # events are not retained
    finally:
        late.close()


def test_incoming_answered_with_seed_urls(running: RunningBridge, watcher: Watcher) -> None:
    base = running.base
    send(running, "incoming_call")
    ringing = watcher.wait_for(f"{base}/{MAC}/call", lambda p: p["state"] == "ringing")
    assert (ringing["direction"], ringing["number"], ringing["name"]) == ("incoming", "5551234", "Alice")
    assert ringing["line"] == "100"
    send(running, "off_hook")
    send(running, "call_established")
    talking = watcher.wait_for(f"{base}/{MAC}/call", lambda p: p["state"] == "talking")
    assert talking["number"] == "5551234"
    assert talking["answered"] is not None
    send(running, "call_terminated")
    ended = watcher.wait_for(f"{base}/{MAC}/event", lambda p: p["event_type"] == "call_ended")
    assert ended["call"]["result"] == "answered"
    assert ended["call"]["number"] == "5551234"
    assert ended["call"]["name"] == "Alice"
    after = watcher.wait_for(f"{base}/{MAC}/call", lambda p: p["last_call"] is not None)
    assert after["state"] == "offhook"
    send(running, "on_hook")
    watcher.wait_for(f"{base}/{MAC}/call", lambda p: p["state"] == "idle")
    history = watcher.wait_for(f"{base}/{MAC}/history")
    assert [r["result"] for r in history] == ["answered"]


def test_unknown_event_is_published_and_changes_nothing(running: RunningBridge, watcher: Watcher) -> None:
    base = running.base
    send(running, "incoming_call")
    watcher.wait_for(f"{base}/{MAC}/call", lambda p: p["state"] == "ringing")
    calls_before = len(watcher.on(f"{base}/{MAC}/call"))
    response = running.hit(f"/Peripheral-Information/yealink?device={MAC}&exp_number=2")
    assert response.status_code == 200
    event = watcher.wait_for(f"{base}/{MAC}/event", lambda p: p["event_type"] == "peripheral_information")
    assert event["extra"] == {"exp_number": "2"}
    assert event["number"] == "5551234" or event["number"] is None
    assert len(watcher.on(f"{base}/{MAC}/call")) == calls_before
    assert running.bridge.devices[MAC].phone.state.value == "ringing"


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/offhook", 404),
        ("/a/b/c", 404),
        ("/offhook/yealink?remote=%zz", 400),
        ("/offhook/yealink?remote=%ff%fe", 400),
        ("/off%20hook/yealink", 400),
        ("/offhook/yealink?" + "&".join(f"p{i}=1" for i in range(101)), 413),
        ("/offhook/yealink?x=" + "a" * 4100, 414),
    ],
)
def test_refusals(running: RunningBridge, watcher: Watcher, path: str, status: int) -> None:
    response = running.hit(path)
    assert response.status_code == status
    assert response.text.strip()
    assert "\n" not in response.text.strip()
    refused = watcher.wait_for(f"{running.base}/bridge/event", lambda p: p["type"] == "request_refused")
    assert refused["data"]["status"] == status
    assert running.bridge.devices == {}


def test_wrong_method_is_405(running: RunningBridge, watcher: Watcher) -> None:
    response = running.hit(f"/offhook/yealink?device={MAC}", method="PUT")
    assert response.status_code == 405
    assert running.bridge.devices == {}


def test_post_form_body(running: RunningBridge, watcher: Watcher) -> None:
    response = running.hit(
        "/incoming/snom", method="POST", data={"mac": MAC, "remote": '"Bob" <sip:777@pbx;user=phone>'}
    )
    assert response.status_code == 200
    call = watcher.wait_for(f"{running.base}/{MAC}/call", lambda p: p["state"] == "ringing")
    assert (call["number"], call["name"]) == ("777", "Bob")


def test_healthz(running: RunningBridge) -> None:
    response = running.hit("/healthz")
    assert response.status_code == 200
    body = response.json()
    assert body["mqtt_connected"] is True
    assert body["queue_length"] >= 0


def test_bridge_state_info_and_devices(running: RunningBridge, watcher: Watcher) -> None:
    base = running.base
    assert watcher.wait_for(f"{base}/bridge/state") == {"state": "online"}
    info = watcher.wait_for(f"{base}/bridge/info")
    assert info["base_topic"] == base
    assert "yealink" in info["phone_types"]
    send(running, "off_hook")
    joined = watcher.wait_for(f"{base}/bridge/event", lambda p: p["type"] == "device_joined")
    assert joined["data"]["mac"] == "00:15:65:aa:bb:cc"
    devices = watcher.wait_for(f"{base}/bridge/devices", lambda p: len(p) == 1)
    assert devices[0]["id"] == MAC
    assert devices[0]["model"] == "SIP-T46S"
