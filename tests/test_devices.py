"""The device registry over MQTT: configured and learned phones, rename, remove, addresses."""

import asyncio
import json
import logging
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from bridge import payloads
from bridge.device_list import DEVICES_BATCH, DEVICES_EVERY, DEVICES_PER_EVERY
from bridge.mqtt import Endpoint
from bridge.presence import OFFLINE_BATCH
from bridge.registry import Device
from bridge.service import Bridge
from tests.conftest import (
    TIMEOUT,
    Mosquitto,
    RunningBridge,
    Watcher,
    make_config,
    start_bridge,
    unique_base,
    wait_until,
)

MAC = "001565aabbcc"
LEAVES = ("availability", "status", "call", "history")


@pytest.fixture
def bridge(mosquitto: Mosquitto, base_topic: str, watcher: Watcher) -> Iterator[RunningBridge]:
    """A bridge whose Home Assistant discovery lives under the test's own base topic."""
    extra = {"homeassistant": {"discovery_prefix": f"{base_topic}/ha"}}
    rb = start_bridge(make_config(base_topic, mosquitto.url, extra), Endpoint("127.0.0.1", mosquitto.port))
    yield rb
    rb.stop()


def request(watcher: Watcher, base: str, name: str, payload: object) -> Any:
    """Send a bridge request and wait for its response."""
    transaction = f"t{len(watcher.messages)}-{name}"
    body = {**payload, "transaction": transaction} if isinstance(payload, dict) else payload
    watcher.client.publish(f"{base}/bridge/request/{name}", json.dumps(body), qos=1)
    return watcher.wait_for(
        f"{base}/bridge/response/{name}",
        lambda p: p["transaction"] == transaction or not isinstance(payload, dict),
    )


def hit(rb: RunningBridge, path: str, source: str | None = None) -> None:
    transport = httpx.HTTPTransport(local_address=source) if source else None
    with httpx.Client(base_url=rb.url, transport=transport, timeout=TIMEOUT) as client:
        response = client.get(path)
    assert (response.status_code, response.text) == (200, "OK")


def test_rename_then_remove(bridge: RunningBridge, watcher: Watcher, mosquitto: Mosquitto) -> None:
    base = bridge.base
    hit(bridge, "/incomingcall/yealink?device=00:15:65:AA:BB:CC&remote=5551234")
    watcher.wait_for(f"{base}/bridge/event", lambda p: p["type"] == "device_joined")

    renamed = request(watcher, base, "device/rename", {"id": "00-15-65-aa-bb-cc", "name": " Front desk "})
    assert (renamed["status"], renamed["data"]["name"]) == ("ok", "Front desk")
    devices = watcher.wait_for(f"{base}/bridge/devices", lambda p: p and p[0]["name"] == "Front desk")
    assert [d["id"] for d in devices] == [MAC]
    event = watcher.wait_for(f"{base}/bridge/event", lambda p: p["type"] == "device_updated")
    assert (event["data"]["old_name"], event["data"]["name"]) == (MAC, "Front desk")
    watcher.wait_for(f"{base}/ha/device/amego_{MAC}/config", lambda p: p and p["dev"]["name"] == "Front desk")

    refused = request(watcher, base, "device/rename", {"id": MAC, "name": "bad\nname"})
    assert refused["status"] == "error"
    assert "control characters" in refused["error"]

    removed = request(watcher, base, "device/remove", MAC)  # a bare id
    assert (removed["status"], removed["data"]["id"]) == ("ok", MAC)
    event = watcher.wait_for(f"{base}/bridge/event", lambda p: p["type"] == "device_removed")
    assert event["data"]["id"] == MAC
    watcher.wait_for(f"{base}/bridge/devices", lambda p: p == [])
    cleared = [f"{base}/{MAC}/{leaf}" for leaf in LEAVES] + [f"{base}/ha/device/amego_{MAC}/config"]
    wait_until(
        lambda: all(any(m.payload == b"" for m in watcher.on(t)) for t in cleared),
        what="empty retained payloads on every retained topic of the phone",
    )
    late = Watcher(mosquitto.port, f"{base}/#")
    try:
        late.wait_for(f"{base}/bridge/devices")
        assert not [m.topic for m in late.messages if MAC in m.topic]
    finally:
        late.close()

    gone = request(watcher, base, "device/remove", {"id": MAC})
    assert gone["status"] == "error"
    assert MAC in gone["error"]

    # The phone calls again: it joins again.
    hit(bridge, "/offhook/yealink?device=001565AABBCC")
    wait_until(
        lambda: [m.json()["type"] for m in watcher.on(f"{base}/bridge/event")].count("device_joined") == 2,
        what="a second device_joined",
    )


def test_phone_address_follows_its_hits(bridge: RunningBridge, watcher: Watcher) -> None:
    base = bridge.base
    hit(bridge, f"/offhook/snom?device={MAC}")
    watcher.wait_for(f"{base}/bridge/devices", lambda p: p and p[0]["ip"] == "127.0.0.1")
    hit(bridge, f"/onhook/snom?device={MAC}", source="127.0.0.2")  # a new address
    watcher.wait_for(f"{base}/bridge/devices", lambda p: p and p[0]["ip"] == "127.0.0.2")
    hit(bridge, f"/ipchange/snom?device={MAC}&ip=192.168.1.77", source="127.0.0.2")
    watcher.wait_for(f"{base}/bridge/devices", lambda p: p and p[0]["ip"] == "192.168.1.77")
    status = watcher.wait_for(f"{base}/{MAC}/status", lambda p: p["ip"] == "192.168.1.77")
    assert status["phone_type"] == "snom"


def test_configured_phone_is_known_by_its_address(
    mosquitto: Mosquitto, base_topic: str, watcher: Watcher
) -> None:
    devices = {"learn": False, "frontdesk": {"name": "Front desk", "ip": "127.0.0.1:8081"}}
    config = make_config(base_topic, mosquitto.url, {"devices": devices})
    rb = start_bridge(config, Endpoint("127.0.0.1", mosquitto.port))
    try:
        registry = watcher.wait_for(f"{base_topic}/bridge/devices")
        assert [(d["id"], d["name"], d["configured"]) for d in registry] == [
            ("frontdesk", "Front desk", True)
        ]
        # A hit with no MAC from the configured address is that phone, even with learn = false.
        hit(rb, "/incomingcall/grandstream?remote=5551234")
        event = watcher.wait_for(f"{base_topic}/frontdesk/event")
        assert event["event_type"] == "incoming_call"
        joined = watcher.wait_for(f"{base_topic}/bridge/event", lambda p: p["type"] == "device_joined")
        assert (joined["data"]["id"], joined["data"]["first_seen"] is not None) == ("frontdesk", True)
        # From another address, with no MAC: an unknown phone, refused.
        with httpx.Client(
            transport=httpx.HTTPTransport(local_address="127.0.0.3"), timeout=TIMEOUT
        ) as client:
            response = client.get(f"{rb.url}/offhook/grandstream")
        assert response.status_code == 403
        assert "ip-127-0-0-3" in response.text
    finally:
        rb.stop()


@pytest.mark.parametrize("phones", [3, 12])
def test_silent_phones_go_offline_with_one_log_line_when_many_do(
    caplog: pytest.LogCaptureFixture, phones: int
) -> None:
    """`devices.offline_after`: a phone silent that long goes offline at the next tick. After a
    long stop every phone does, in the same tick: past 10, one line says so, not one per phone."""
    start = datetime(2026, 11, 26, 8, 0, tzinfo=UTC)
    now = [start]
    config = make_config(unique_base(), "mqtt://127.0.0.1:1", {"devices": {"offline_after": 60}})
    bridge = Bridge(config, clock=lambda: now[0])  # no broker: what is published goes nowhere
    macs = [f"0015650000{n:02x}" for n in range(phones)]
    for mac in macs:
        device = bridge.registry.new(mac, "yealink", True, start)
        device.phone = replace(device.phone, last_seen=start)
        device.online = True
        bridge.registry.devices[mac] = device
    bridge.tick()
    assert all(bridge.devices[mac].online for mac in macs)
    now[0] = start + timedelta(seconds=61)
    with caplog.at_level(logging.INFO, logger="bridge"):
        bridge.tick()
    assert not any(bridge.devices[mac].online for mac in macs)
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    if phones > 10:
        assert len(lines) == 1
        assert lines[0].startswith(f"{phones} phones are offline: nothing heard for 60 s (0015650000")
    else:
        assert sorted(lines) == [f"phone {mac} is offline: nothing heard for 60 s" for mac in macs]


def test_many_silent_phones_go_offline_a_batch_a_loop_turn() -> None:
    """After a long stop the first tick finds every phone silent: they go offline OFFLINE_BATCH
    at a time, a loop turn apart, so hits coming in meanwhile are answered in between. A phone
    heard before its batch's turn stays online."""
    start = datetime(2026, 11, 26, 8, 0, tzinfo=UTC)
    now = [start]
    config = make_config(unique_base(), "mqtt://127.0.0.1:1", {"devices": {"offline_after": 60}})
    bridge = Bridge(config, clock=lambda: now[0])
    macs = [f"00156500{n:04x}" for n in range(2 * OFFLINE_BATCH + 7)]
    for mac in macs:
        device = bridge.registry.new(mac, "yealink", True, start)
        device.phone = replace(device.phone, last_seen=start)
        device.online = True
        bridge.registry.devices[mac] = device
    offline: list[int] = []  # phones offline after the tick, then after each loop turn

    async def main() -> None:
        bridge.tick()  # the first look for silent phones: none yet
        now[0] = start + timedelta(seconds=61)
        bridge.tick()
        offline.append(sum(not bridge.devices[mac].online for mac in macs))
        bridge.presence.heard[macs[-1]] = now[0]  # a hit from the last phone, before its batch
        for _ in range(3):
            await asyncio.sleep(0)
            offline.append(sum(not bridge.devices[mac].online for mac in macs))

    asyncio.run(main())
    assert offline == [OFFLINE_BATCH, 2 * OFFLINE_BATCH, len(macs) - 1, len(macs) - 1]
    assert bridge.devices[macs[-1]].online


def test_silent_phones_are_looked_for_as_often_as_offline_after_needs() -> None:
    """The look for silent phones walks every phone: it runs every sixtieth of offline_after, at
    most once a minute, not on every tick. A phone goes offline at most that much late; a clock
    that goes back does not put off the next look."""
    start = datetime(2026, 11, 26, 8, 0, tzinfo=UTC)
    now = [start]
    config = make_config(unique_base(), "mqtt://127.0.0.1:1", {"devices": {"offline_after": 7200}})
    bridge = Bridge(config, clock=lambda: now[0])
    device = bridge.registry.new(MAC, "yealink", True, start)
    device.phone = replace(device.phone, last_seen=start)
    device.online = True
    bridge.registry.devices[MAC] = device

    def tick_at(seconds: int) -> bool | None:
        now[0] = start + timedelta(seconds=seconds)
        bridge.tick()
        return bridge.devices[MAC].online

    offline_at = next(second for second in range(30, 8000) if not tick_at(second))
    assert offline_at == 7230  # silent past 7,200 s from 7,201 on; the looks: 30 s, 90 s, ... 7,230 s
    device.online = True
    bridge.presence.heard[MAC] = start - timedelta(seconds=7300)  # silent already, by the clock set back
    assert tick_at(100) is False  # the clock went back: a look at once, not at 7,290 s


def bridge_with_phones(phones: int) -> Bridge:
    bridge = Bridge(make_config(unique_base(), "mqtt://127.0.0.1:1"))  # no broker: nothing goes out
    t0 = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
    for n in range(phones):
        device = bridge.registry.new(f"00156500{n:04x}", "yealink", True, t0)
        bridge.registry.devices[device.id] = device
    return bridge


@pytest.mark.parametrize("phones", [3, DEVICES_PER_EVERY, 5 * DEVICES_PER_EVERY // 2])
def test_bridge_devices_is_restated_once_a_second_or_a_second_per_thousand_phones(phones: int) -> None:
    """A change restates `bridge/devices` within a few loop turns; changes right after that wait
    for the spacing, which grows with the list past DEVICES_PER_EVERY phones, and then go out in
    one restatement."""
    bridge = bridge_with_phones(phones)
    sent: list[float] = []  # loop times of the restatements
    restate = bridge.device_list.publish

    def counted() -> None:
        sent.append(asyncio.get_running_loop().time())
        restate()

    bridge.device_list.publish = counted  # type: ignore[method-assign]
    spacing: list[float] = []

    async def main() -> None:
        bridge.device_list.changed()
        for _ in range(100):
            if sent:
                break
            await asyncio.sleep(0)
        bridge.device_list.changed()
        bridge.device_list.changed()
        due = bridge.device_list.due
        assert due is not None
        spacing.append(due.when() - sent[0])
        due.cancel()

    asyncio.run(main())
    assert len(sent) == 1  # the first within a few loop turns, the other two planned as one
    assert spacing[0] == pytest.approx({3: 1.0, 1000: 1.0, 2500: 2.5}[phones] * DEVICES_EVERY, abs=0.01)


def test_a_planned_restatement_of_bridge_devices_encodes_its_entries_a_batch_a_loop_turn(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With 10,000 phones booting, encoding every entry changed since the last restatement at
    once held the loop for 77-88 ms: DEVICES_BATCH a loop turn, then one join of them all."""
    bridge = bridge_with_phones(2 * DEVICES_BATCH + 200)
    turns = 0
    encoded: list[int] = []  # the loop turn of each entry encoded
    published: list[int] = []
    entry_json = Device.entry_json
    restate = bridge.device_list.publish

    def counted(device: Device) -> bytes:
        encoded.append(turns)
        return entry_json(device)

    def counted_restate() -> None:
        published.append(turns)
        restate()

    monkeypatch.setattr(Device, "entry_json", counted)
    bridge.device_list.publish = counted_restate  # type: ignore[method-assign]

    async def main() -> None:
        nonlocal turns
        bridge.device_list.changed()
        while not published and turns < 100:
            await asyncio.sleep(0)
            turns += 1

    asyncio.run(main())
    # Loop turn -> entries encoded on it, before the restatement's own join of them all.
    before = Counter(encoded[: len(bridge.devices)])
    assert sorted(before.values()) == [200, DEVICES_BATCH, DEVICES_BATCH]
    assert len(published) == 1
    assert published[0] > max(before)


def test_bridge_devices_is_encoded_again_only_for_phones_that_changed() -> None:
    """`bridge/devices` is joined from each phone's encoded entry, kept until something it shows
    changes: the payload is the one encoding every entry gives, after each kind of change."""
    bridge = Bridge(make_config(unique_base(), "mqtt://127.0.0.1:1"))
    registry = bridge.registry
    t0 = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
    for n in range(5):
        device = registry.new(f"0015650000{n:02x}", "yealink", True, t0)
        registry.devices[device.id] = device
    [first, second, third, fourth, fifth] = registry.devices.values()

    def as_one() -> bytes:
        return payloads.encode(registry.entries())

    assert registry.devices_json() == as_one()
    kept = [d.entry_json() for d in registry.devices.values()]
    assert all(d.entry_json() is k for d, k in zip(registry.devices.values(), kept, strict=True))
    first.phone = replace(first.phone, last_seen=t0 + timedelta(seconds=5), model="SIP-T46U")
    second.name = "Front desk"
    third.first_seen = t0 + timedelta(hours=1)
    fourth.configured = True
    fifth.mac = "0015650000ff"
    fifth.id = "0015650000fe"  # (the registry would move it; the entry follows its id all the same)
    assert registry.devices_json() == as_one()
    assert all(d.entry_json() is not k for d, k in zip(registry.devices.values(), kept, strict=True))
    assert json.loads(registry.devices_json())[1]["name"] == "Front desk"
    del registry.devices[third.id]
    assert registry.devices_json() == as_one()
    assert bridge.out.devices(registry.devices_json()).payload == as_one()
