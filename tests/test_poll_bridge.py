"""Polling through the running bridge: availability follows the phone, stale calls are resynced."""

from collections.abc import Iterator

import pytest

from bridge.mqtt import Endpoint
from tests.conftest import Mosquitto, RunningBridge, Watcher, make_config, start_bridge
from tests.phone_standin import StandIn

MAC = "001565aabbcc"
IDLE = "account.1.user_name=100\naccount.1.status=1\ncall_state=idle\n"


@pytest.fixture
def phone() -> Iterator[StandIn]:
    standin = StandIn(auth="basic", password="pw")
    yield standin
    standin.close()


@pytest.fixture
def polled(
    mosquitto: Mosquitto, base_topic: str, watcher: Watcher, phone: StandIn
) -> Iterator[RunningBridge]:
    device = {"phone_type": "yealink", "ip": phone.address, "username": "admin", "password": "pw"}
    config = make_config(base_topic, mosquitto.url, {"poll": {"interval": 0.2}, "devices": {MAC: device}})
    rb = start_bridge(config, Endpoint("127.0.0.1", mosquitto.port))
    yield rb
    rb.stop()


def test_a_phone_that_stops_answering_goes_offline_and_comes_back(
    polled: RunningBridge, watcher: Watcher, phone: StandIn
) -> None:
    topic = f"{polled.base}/{MAC}/availability"
    watcher.wait_for(topic, lambda p: p == {"state": "online"})
    phone.down = True
    watcher.wait_for(topic, lambda p: p == {"state": "offline"})
    phone.down = False
    online = [m for m in watcher.on(topic) if m.json() == {"state": "online"}]
    watcher.wait_for(topic, lambda p: p == {"state": "online"} and len(watcher.on(topic)) > len(online) + 1)


def test_a_call_the_phone_no_longer_has_is_ended_by_a_resync(
    polled: RunningBridge, watcher: Watcher, phone: StandIn
) -> None:
    base = polled.base
    phone.replies["/servlet"] = "account.1.user_name=100\naccount.1.status=1\ncall_state=talking\n"
    assert polled.hit(f"/incomingcall/yealink?device={MAC}&remote=5551234&callid=z1").status_code == 200
    assert polled.hit(f"/callestablished/yealink?device={MAC}&callid=z1").status_code == 200
    watcher.wait_for(f"{base}/{MAC}/call", lambda p: p["state"] == "talking")
    phone.replies["/servlet"] = IDLE  # the phone's call_terminated was lost
    resync = watcher.wait_for(f"{base}/{MAC}/event", lambda p: p["event_type"] == "resync", timeout=20)
    assert resync["extra"]["corrections"]
    ended = watcher.wait_for(f"{base}/{MAC}/event", lambda p: p["event_type"] == "call_ended")
    assert (ended["call"]["call_id"], ended["call"]["result"]) == ("z1", "unknown")
    assert any(seen.path == "/servlet" for seen in phone.requests())
