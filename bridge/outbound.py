"""The MQTT messages the bridge publishes, built from its state (CONTRACT §2)."""

from collections.abc import Iterable
from datetime import datetime

from bridge import payloads
from bridge.calls import CallRecord, Phone
from bridge.mqtt import Message
from bridge.registry import Device
from bridge.topics import RETAINED_DEVICE_TOPICS, BridgeTopic, DeviceTopic, Topics

RECORDS_KEPT = 4096  # call record payloads kept for history messages (about 1 kB each)


class Outbound:
    def __init__(self, topics: Topics, qos: int) -> None:
        self.topics = topics
        self.qos = qos
        # Each call's end restates the phone's whole history, and records never change: the
        # payloads of recent ones are kept, by identity, rather than built again every time.
        self._records: dict[int, tuple[CallRecord, payloads.Json]] = {}

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
        payload = payloads.call_state(phone, updated, self._record)
        return self.device(device_id, DeviceTopic.CALL, payload, retain=True)

    def status(self, device_id: str, phone: Phone) -> Message:
        return self.device(device_id, DeviceTopic.STATUS, payloads.status(phone), retain=True)

    def history(self, device_id: str, records: Iterable[CallRecord]) -> Message:
        entries = [self._record(rec) for rec in records]  # payloads.history(records), from the cache
        return self.device(device_id, DeviceTopic.HISTORY, entries, retain=True)

    def _record(self, rec: CallRecord) -> payloads.Json:
        kept = self._records.get(id(rec))
        if kept is not None and kept[0] is rec:
            return kept[1]
        if len(self._records) >= RECORDS_KEPT:
            self._records.clear()
        data = payloads.record(rec)
        self._records[id(rec)] = (rec, data)
        return data

    def availability(self, device_id: str, online: bool) -> Message:
        return self.device(device_id, DeviceTopic.AVAILABILITY, payloads.availability(online), retain=True)

    def restate(self, device: Device, now: datetime) -> list[Message]:
        """A seen device's retained topics, as they stand."""
        if device.first_seen is None:
            return []
        messages = [
            self.call(device.id, device.phone, device.call_updated or now),
            self.status(device.id, device.phone),
            self.history(device.id, device.history),
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
