"""Home Assistant discovery end to end: a real bridge, a real mosquitto, HA played by MQTT clients."""

import time
import uuid
from collections.abc import Iterator

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from bridge.mqtt import Endpoint
from tests.conftest import (
    TIMEOUT,
    Mosquitto,
    RunningBridge,
    Watcher,
    make_config,
    start_bridge,
    wait_until,
)

MAC = "001565aabbcc"
OFF_HOOK = f"/offhook/yealink?device={MAC}&model=SIP-T46S&firmware=66.86.0.15&local=sip:100@pbx"
STATE_OPTIONS = ("stat_t", "json_attr_t", "t")


def publish(port: int, topic: str, payload: bytes, retain: bool = False) -> None:
    """One message, as Home Assistant (or a user) sends it; returns once the broker has it."""
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"pub-{uuid.uuid4().hex[:8]}")
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(TIMEOUT)
    finally:
        client.disconnect()  # before loop_stop, which otherwise waits out paho's 1 s select
        client.loop_stop()


def retained(port: int, topic_filter: str) -> dict[str, bytes]:
    """The retained messages under a filter, as a client subscribing now sees them."""
    late = Watcher(port, topic_filter)
    try:
        # Retained messages are sent on subscription, so once a later message arrives all have.
        sync = f"{topic_filter.rstrip('#').rstrip('/')}/sync-{uuid.uuid4().hex[:6]}"
        publish(port, sync, b"{}")
        late.wait_for(sync)
        return {m.topic: m.payload for m in late.messages if m.retain}
    finally:
        late.client.disconnect()  # wakes paho's loop so close() does not wait for it
        late.close()


@pytest.fixture
def prefix(base_topic: str) -> str:
    return f"{base_topic}_ha"


@pytest.fixture
def ha(mosquitto: Mosquitto, prefix: str) -> Iterator[Watcher]:
    """Home Assistant's side: everything under the discovery prefix."""
    w = Watcher(mosquitto.port, f"{prefix}/#")
    yield w
    w.close()


def bridge_with(
    mosquitto: Mosquitto, base: str, prefix: str, configured: bool = True, **homeassistant: object
) -> RunningBridge:
    """A bridge with its own discovery prefix; `configured`: it knows the phone from its config."""
    extra: dict[str, dict[str, object]] = {"homeassistant": {"discovery_prefix": prefix, **homeassistant}}
    if configured:
        extra["devices"] = {MAC: {"name": "Front desk", "phone_type": "yealink"}}
    config = make_config(base, mosquitto.url, extra)
    return start_bridge(config, Endpoint("127.0.0.1", mosquitto.port))


def config_topic(prefix: str, device: str = MAC) -> str:
    return f"{prefix}/device/amego_{device}/config"


def test_new_phone_appears_with_a_retained_discovery_config(
    mosquitto: Mosquitto, base_topic: str, prefix: str, ha: Watcher, watcher: Watcher
) -> None:
    rb = bridge_with(mosquitto, base_topic, prefix, configured=False)
    topic = config_topic(prefix)
    try:
        assert rb.hit(OFF_HOOK).status_code == 200
        config = ha.wait_for(topic)
        assert config["dev"]["ids"] == [f"amego_{MAC}"]
        assert config["dev"]["cns"] == [["mac", "00:15:65:aa:bb:cc"]]
        assert config["dev"]["mdl"] == "SIP-T46S"
        assert config["dev"]["sw"] == "66.86.0.15"
        assert config["dev"]["mf"] == "Yealink"
        assert config["o"]["name"] == "amego-bridge"
        # Every state topic the entities read has been published by the bridge.
        named = {c[o] for c in config["cmps"].values() for o in STATE_OPTIONS if o in c}
        named |= {a["topic"] for a in config["avty"]}
        for state_topic in sorted(named):
            watcher.wait_for(state_topic)
        # A Home Assistant that starts later still finds the phone.
        assert topic in retained(mosquitto.port, f"{prefix}/#")
    finally:
        rb.stop()
        publish(mosquitto.port, topic, b"", retain=True)


def test_birth_message_makes_the_bridge_republish(
    mosquitto: Mosquitto, base_topic: str, prefix: str, ha: Watcher
) -> None:
    rb = bridge_with(mosquitto, base_topic, prefix)
    try:
        rb.bridge.discovery.delay = 0.3
        topic = config_topic(prefix)
        first = ha.wait_for(topic)
        assert first["dev"]["name"] == "Front desk"
        assert rb.hit(OFF_HOOK).status_code == 200
        ha.wait_for(topic, lambda p: p["dev"].get("mdl") == "SIP-T46S")  # the model changed it
        ha.clear()
        sent = time.monotonic()
        publish(mosquitto.port, f"{prefix}/status", b"online")
        again = ha.wait_for(topic)
        waited = time.monotonic() - sent
        assert again["dev"]["mdl"] == "SIP-T46S"
        assert waited < 0.3 + 2.0
        assert [m.payload for m in ha.on(f"{prefix}/status")] == [b"online"]
        # Home Assistant's last will (`offline`) asks for nothing; the next `online` does again.
        ha.clear()
        publish(mosquitto.port, f"{prefix}/status", b"offline")
        publish(mosquitto.port, f"{prefix}/status", b"online")
        ha.wait_for(topic)
        assert len(ha.on(topic)) == 1
    finally:
        rb.stop()
        publish(mosquitto.port, config_topic(prefix), b"", retain=True)


def test_dial_entity_reaches_the_bridge(
    mosquitto: Mosquitto, base_topic: str, prefix: str, ha: Watcher, watcher: Watcher
) -> None:
    rb = bridge_with(mosquitto, base_topic, prefix)
    try:
        config = ha.wait_for(config_topic(prefix))
        dial = config["cmps"]["dial"]
        assert dial["p"] == "text"
        # What Home Assistant does when someone types a number into the text entity.
        publish(mosquitto.port, dial["cmd_t"], b"5551234")
        response = watcher.wait_for(f"{base_topic}/{MAC}/response")
        assert response["command"] == "dial"
        for key in ("answer", "hangup"):
            button = config["cmps"][key]
            publish(mosquitto.port, button["cmd_t"], button["pl_prs"].encode())
            watcher.wait_for(f"{base_topic}/{MAC}/response", lambda p, k=key: p["command"] == k)  # type: ignore[misc]
    finally:
        rb.stop()
        publish(mosquitto.port, config_topic(prefix), b"", retain=True)


def test_disabled_discovery_publishes_none_and_clears_ours(
    mosquitto: Mosquitto, base_topic: str, prefix: str, ha: Watcher, watcher: Watcher
) -> None:
    topic = config_topic(prefix)
    rb = bridge_with(mosquitto, base_topic, prefix)
    ha.wait_for(topic)
    rb.stop()
    assert topic in retained(mosquitto.port, f"{prefix}/#")
    ha.clear()
    rb = bridge_with(mosquitto, base_topic, prefix, enabled=False)
    try:
        wait_until(lambda: any(m.payload == b"" for m in ha.on(topic)), what="the discovery to be cleared")
        other = "02" + uuid.uuid4().hex[:10]
        assert rb.hit(OFF_HOOK.replace(MAC, other)).status_code == 200
        watcher.wait_for(f"{base_topic}/{other}/status")
        health = f"{base_topic}/bridge/response/health_check"
        publish(mosquitto.port, f"{base_topic}/bridge/request/health_check", b"{}")
        watcher.wait_for(health)  # published after anything the hit caused
        assert retained(mosquitto.port, f"{prefix}/#") == {}
        assert all(m.payload == b"" for m in ha.messages if m.topic.endswith("/config"))
    finally:
        rb.stop()


def test_discovery_can_be_left_unretained(
    mosquitto: Mosquitto, base_topic: str, prefix: str, ha: Watcher
) -> None:
    rb = bridge_with(mosquitto, base_topic, prefix, retain=False)
    try:
        ha.wait_for(config_topic(prefix))
        assert not ha.on(config_topic(prefix))[0].retain
        assert retained(mosquitto.port, f"{prefix}/#") == {}
    finally:
        rb.stop()
