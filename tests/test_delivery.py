"""Nothing accepted is lost: broker restarts, a full queue, and what is refused instead."""

from collections.abc import Iterator, Sequence

import pytest

from bridge.mqtt import Endpoint, Message, MqttLink
from tests.conftest import (
    Mosquitto,
    RunningBridge,
    Watcher,
    make_config,
    start_bridge,
    unique_base,
    wait_until,
)

MAC = "001565aabbcc"


@pytest.fixture
def restartable(own_mosquitto: Mosquitto) -> Iterator[tuple[RunningBridge, Watcher]]:
    base = unique_base()
    watcher = Watcher(own_mosquitto.port, f"{base}/#", persistent=True)
    rb = start_bridge(make_config(base, own_mosquitto.url), Endpoint("127.0.0.1", own_mosquitto.port))
    yield rb, watcher
    rb.stop()
    watcher.close()


def sequence(watcher: Watcher, topic: str) -> list[int]:
    """The `seq` of each event on `topic`, first deliveries only (QoS 1 may repeat one)."""
    seen: list[int] = []
    for message in watcher.on(topic):
        seq = int(message.json()["extra"]["seq"])
        if seq not in seen:
            seen.append(seq)
    return seen


def test_broker_restart_in_the_middle_of_1000_hits_loses_none_in_order(
    own_mosquitto: Mosquitto, restartable: tuple[RunningBridge, Watcher]
) -> None:
    rb, watcher = restartable
    topic = f"{rb.base}/{MAC}/event"
    statuses = []
    for seq in range(1000):
        if seq == 300:
            own_mosquitto.stop()
        if seq == 600:
            own_mosquitto.start()
        statuses.append(rb.hit(f"/tick/yealink?device={MAC}&seq={seq}").status_code)
    assert set(statuses) == {200}
    watcher.wait_for(topic, lambda p: p["extra"]["seq"] == "999", timeout=30)
    assert sequence(watcher, topic) == list(range(1000))
    wait_until(lambda: rb.hit("/healthz").json()["queue_length"] == 0, what="the queue to drain")


def test_full_queue_refuses_with_503_and_changes_nothing(own_mosquitto: Mosquitto) -> None:
    base = unique_base()
    config = make_config(base, own_mosquitto.url, {"mqtt": {"queue_size": 10}})
    rb = start_bridge(config, Endpoint("127.0.0.1", own_mosquitto.port))
    watcher = Watcher(own_mosquitto.port, f"{base}/#", persistent=True)
    try:
        own_mosquitto.stop()
        accepted: list[int] = []
        for seq in range(20):
            response = rb.hit(f"/tick/yealink?device={MAC}&seq={seq}")
            if response.status_code == 200:
                accepted.append(seq)
                continue
            assert response.status_code == 503
            assert "queue full" in response.text
            break
        else:
            pytest.fail("the bridge never refused although its queue holds 10 messages")
        before = rb.bridge.devices[MAC].phone
        refused = rb.hit(f"/incomingcall/yealink?device={MAC}&remote=5551234")
        assert refused.status_code == 503
        assert rb.bridge.devices[MAC].phone == before  # a refused hit changes no state
        own_mosquitto.start()
        topic = f"{base}/{MAC}/event"
        watcher.wait_for(topic, lambda p: p["extra"].get("seq") == str(accepted[-1]), timeout=20)
        assert sequence(watcher, topic) == accepted
        wait_until(lambda: rb.hit("/healthz").json()["queue_length"] == 0, what="the queue to drain")
        assert rb.hit(f"/incomingcall/yealink?device={MAC}&remote=5551234").status_code == 200
    finally:
        rb.stop()
        watcher.close()


def test_ring_timeout_ends_a_call_as_missed(mosquitto: Mosquitto, watcher: Watcher, base_topic: str) -> None:
    config = make_config(base_topic, mosquitto.url, {"calls": {"ring_timeout": 0.2}})
    rb = start_bridge(config, Endpoint("127.0.0.1", mosquitto.port))
    try:
        assert rb.hit(f"/incomingcall/yealink?device={MAC}&remote=5551234").status_code == 200
        ended = watcher.wait_for(f"{base_topic}/{MAC}/event", lambda p: p["event_type"] == "call_ended")
        assert ended["call"]["result"] == "missed"
        assert ended["raw"] is None
        call = watcher.wait_for(f"{base_topic}/{MAC}/call", lambda p: p["last_call"] is not None)
        assert call["state"] == "idle"
    finally:
        rb.stop()


def test_a_restart_restates_many_phones_a_batch_at_a_time(
    mosquitto: Mosquitto, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every phone's retained topics and discovery are restated on connect, but never all in the
    queue at once: the restatement waits for the queue to drain between batches of phones."""
    monkeypatch.setattr("bridge.service.RESTATE_BATCH", 10)
    monkeypatch.setattr("bridge.service.RESTATE_LOW", 20)
    base = unique_base()
    config = make_config(base, mosquitto.url)
    endpoint = Endpoint("127.0.0.1", mosquitto.port)
    macs = [f"0015650{n:05x}" for n in range(200)]
    first = start_bridge(config, endpoint)
    try:
        for mac in macs:
            assert (
                first.hit(f"/incomingcall/yealink?device={mac}&remote=5551234&callid=c-{mac}").status_code
                == 200
            )
        wait_until(lambda: first.hit("/healthz").json()["queue_length"] == 0, what="the queue to drain")
    finally:
        first.stop()
    longest = [0]
    publish = MqttLink.publish

    def measured(self: MqttLink, messages: Sequence[Message], *, force: bool = False) -> bool:
        done = publish(self, messages, force=force)  # the real one: this only notes the queue's length
        longest[0] = max(longest[0], self.queue_length)
        return done

    monkeypatch.setattr(MqttLink, "publish", measured)
    # What the first bridge left retained arrives with the retain flag; the restatement without.
    watcher = Watcher(mosquitto.port, f"{base}/+/call")
    discovery = Watcher(mosquitto.port, "homeassistant/device/+/config")
    wanted = {f"homeassistant/device/amego_{mac}/config" for mac in macs} | {
        f"{base}/{mac}/call" for mac in macs
    }

    def restated() -> set[str]:
        return {m.topic for m in [*watcher.messages, *discovery.messages] if not m.retain} & wanted

    second = start_bridge(config, endpoint)
    try:
        wait_until(lambda: restated() == wanted, what="every phone's call and discovery restated")
        assert {m.json()["state"] for m in watcher.messages if not m.retain} == {"ringing"}
        # 200 phones are about 1,000 messages; a batch is 10 phones, started at 20 waiting at most
        assert 0 < longest[0] <= 20 + 10 * 5 + 3
    finally:
        second.stop()
        watcher.close()
        discovery.close()
