"""The MQTT messages the bridge publishes, built from its state (CONTRACT §2)."""

from collections import OrderedDict
from collections.abc import Iterable
from datetime import datetime

import orjson

from bridge import payloads
from bridge.calls import CallRecord, Phone
from bridge.mqtt import Message
from bridge.registry import Device
from bridge.topics import RETAINED_DEVICE_TOPICS, BridgeTopic, DeviceTopic, Topics

# Call records kept encoded for `history` and `call` messages: at the default history_size (20),
# every record in the histories of 1,000 phones with calls. About 560 bytes each: 11 MB at most.
RECORDS_KEPT = 20_000


class Outbound:
    def __init__(self, topics: Topics, qos: int) -> None:
        self.topics = topics
        self.qos = qos
        # Each call's end restates the phone's whole history, and records never change: recent
        # ones are kept encoded, by identity, the least recently used dropped first. With 4,096
        # payloads kept and cleared when full, 1,000 phones with calls built most of every history
        # again: 107 µs for a history of 20 instead of 6.5, and the CPU per hit at 1,000 hits/s
        # rose by a fifth over 60,000 hits (bench/README.md, "Eighth profile").
        self._records: OrderedDict[int, tuple[CallRecord, orjson.Fragment]] = OrderedDict()

    def message(self, topic: str, payload: object, retain: bool) -> Message:
        return Message(topic, payloads.encode(payload), retain=retain, qos=self.qos)

    def device(self, device_id: str, leaf: DeviceTopic, payload: object, retain: bool) -> Message:
        return self.message(self.topics.device(device_id, leaf), payload, retain)

    def bridge(self, leaf: BridgeTopic, payload: object, retain: bool) -> Message:
        return self.message(self.topics.bridge(leaf), payload, retain)

    def bridge_event(self, kind: str, data: dict[str, object]) -> Message:
        return self.bridge(BridgeTopic.EVENT, payloads.bridge_event(kind, data), retain=False)

    def state(self, online: bool) -> Message:
        return self.bridge(BridgeTopic.STATE, payloads.availability(online), retain=True)

    def devices(self, payload: bytes) -> Message:
        """`bridge/devices`, as `Registry.devices_json()` has it."""
        return Message(self.topics.bridge(BridgeTopic.DEVICES), payload, retain=True, qos=self.qos)

    def event(self, device_id: str, payload: object) -> Message:
        return self.device(device_id, DeviceTopic.EVENT, payload, retain=False)

    def call(self, device_id: str, phone: Phone, updated: datetime) -> Message:
        # The last call was kept when it ended; a phone restored from the store has its own built
        # each time until its next call ends, rather than 10,000 phones' filling what is kept.
        payload = payloads.call_state(phone, updated, self._last_call)
        return self.device(device_id, DeviceTopic.CALL, payload, retain=True)

    def status(self, device_id: str, phone: Phone) -> Message:
        return self.device(device_id, DeviceTopic.STATUS, payloads.status(phone), retain=True)

    def history(self, device_id: str, records: Iterable[CallRecord], keep: bool = True) -> Message:
        """`keep`: keep the records encoded for next time (not when restating every phone)."""
        history = list(records)
        # The kept ones first: each new one kept may push out the least recently used.
        found = [self._kept(rec) for rec in history]
        entries = [self._encode(rec, keep) if f is None else f for rec, f in zip(history, found, strict=True)]
        return self.device(device_id, DeviceTopic.HISTORY, entries, retain=True)

    def record(self, rec: CallRecord, keep: bool = True) -> orjson.Fragment:
        """`payloads.record(rec)`, encoded: as a part of a payload, it is written as it is."""
        found = self._kept(rec)
        return self._encode(rec, keep) if found is None else found

    def _encode(self, rec: CallRecord, keep: bool) -> orjson.Fragment:
        encoded = orjson.Fragment(payloads.encode(payloads.record(rec)))
        if keep:
            if len(self._records) >= RECORDS_KEPT:
                self._records.popitem(last=False)
            self._records[id(rec)] = (rec, encoded)
        return encoded

    def forget(self, records: Iterable[CallRecord]) -> None:
        """Records that left their phone's history: no message shows them again."""
        for rec in records:
            kept = self._records.get(id(rec))
            if kept is not None and kept[0] is rec:
                del self._records[id(rec)]

    def _last_call(self, rec: CallRecord) -> orjson.Fragment:
        return self.record(rec, keep=False)

    def _kept(self, rec: CallRecord) -> orjson.Fragment | None:
        kept = self._records.get(id(rec))
        if kept is None or kept[0] is not rec:
            return None
        self._records.move_to_end(id(rec))
        return kept[1]

    def availability(self, device_id: str, online: bool) -> Message:
        return self.device(device_id, DeviceTopic.AVAILABILITY, payloads.availability(online), retain=True)

    def restate(self, device: Device, now: datetime, keep: bool = True) -> list[Message]:
        """A seen device's retained topics, as they stand. `keep`: as for `history`; restating
        every phone (10,000 with 10 calls each) would otherwise fill the kept records with
        phones that may never have another call."""
        if device.first_seen is None:
            return []
        messages = [
            self.call(device.id, device.phone, device.call_updated or now),
            self.status(device.id, device.phone),
            self.history(device.id, device.history, keep),
        ]
        if device.online is not None:
            messages.append(self.availability(device.id, device.online))
        return messages

    def clear(self, device_id: str) -> list[Message]:
        """Empty retained payloads for every retained topic of a device."""
        return [
            Message(self.topics.device(device_id, leaf), b"", retain=True, qos=self.qos)
            for leaf in RETAINED_DEVICE_TOPICS
        ]
