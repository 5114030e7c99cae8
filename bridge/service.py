"""The one stateful orchestrator: phones' state, the call log in memory, MQTT output."""

import asyncio
import json
import logging
import socket
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from bridge import __version__, payloads
from bridge.arp import fallback_id, kernel_lookup
from bridge.calls import CallRecord, Phone, Transition, apply, expire
from bridge.config import Config
from bridge.events import PhoneEvent, RawHit, format_mac
from bridge.mqtt import BrokerSettings, Endpoint, Inbound, Message, MqttLink
from bridge.profiles import BUILTIN_PROFILES
from bridge.topics import BridgeTopic, DeviceTopic, Topics, sanitise_level

log = logging.getLogger(__name__)

# A retained status whose only change is last_seen is restated at most this often.
LAST_SEEN_REFRESH = timedelta(seconds=60)


def utcnow() -> datetime:
    return datetime.now(UTC)


def _registry_view(phone: Phone) -> tuple[object, ...]:
    """What `bridge/devices` shows of a phone, but for last_seen."""
    return phone.phone_type, phone.model, phone.firmware, phone.ip, tuple(line for line, _ in phone.lines)


class RequestError(Exception):
    """A bridge request that cannot be done; the message is the response's `error`."""


def parse_request(payload: bytes) -> dict[str, object]:
    """A request's JSON object; a bare value (`"001565aabbcc"`, `true`) becomes {"value": ...}."""
    text = payload.decode("utf-8", "replace").strip()
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return {"value": text}
    return value if isinstance(value, dict) else {"value": value}


class Refused(Exception):
    """A hit the bridge will not take: answered with `status` and a one-line `reason`."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(slots=True)
class Device:
    id: str
    mac: str | None
    phone: Phone
    name: str = ""
    configured: bool = False
    mac_resolved: bool = True
    first_seen: datetime | None = None
    online: bool | None = None
    call_updated: datetime | None = None
    status_published: datetime | None = None
    history: deque[CallRecord] = field(default_factory=deque)


@dataclass(slots=True)
class Output:
    """What one step publishes, built before anything is committed."""

    messages: list[Message] = field(default_factory=list)


class Bridge:
    def __init__(self, config: Config, clock: Callable[[], datetime] = utcnow) -> None:
        self.config = config
        self.clock = clock
        self.topics = Topics(config.mqtt.base_topic)
        self.devices: dict[str, Device] = {}
        self.link: MqttLink | None = None
        self.started = clock()
        # Bridge requests by name: each takes the request's JSON object and returns `data`.
        self.requests: dict[str, Callable[[dict[str, object]], object]] = {
            "health_check": self.request_health_check,
        }
        for dc in config.devices.phones:
            phone = Phone(device=dc.id, phone_type=dc.phone_type or "generic", ip=dc.ip or None)
            mac = dc.id if len(dc.id) == 12 and all(c in "0123456789abcdef" for c in dc.id) else None
            self.devices[dc.id] = Device(
                dc.id, mac, phone, name=dc.name, configured=True, history=self._history()
            )

    def _history(self) -> deque[CallRecord]:
        return deque(maxlen=self.config.calls.history_size)

    # ---- identity -------------------------------------------------------------------------------

    def identify(self, event: PhoneEvent) -> tuple[str, bool]:
        """The device id of a hit, and whether it rests on a MAC."""
        if event.mac:
            return event.mac, True
        if event.source and self.config.arp.enabled:
            mac = kernel_lookup(event.source)
            if mac:
                return mac, True
        return fallback_id(event.source or "unknown"), False

    # ---- hits -----------------------------------------------------------------------------------

    def handle_hit(self, event: PhoneEvent, device_id: str, mac_resolved: bool) -> None:
        """Take one hit: update state and queue its messages, or raise Refused and change nothing."""
        now = self.clock()
        device = self.devices.get(device_id)
        joined = device is None
        if device is None:
            device = Device(
                device_id,
                device_id if mac_resolved else None,
                Phone(device=device_id, phone_type=event.phone_type),
                mac_resolved=mac_resolved,
                first_seen=now,
                history=self._history(),
            )
        step = apply(device.phone, event, now) if event.kind is not None else Transition(device.phone)
        messages = [
            self._device_message(
                device_id,
                DeviceTopic.EVENT,
                payloads.event(event, device_id, mac_resolved, now, step.matched),
                retain=False,
            )
        ]
        messages += self._changes(device, step, now, event.raw, online=event.kind is not None)
        if joined:
            messages.append(self._bridge_event("device_joined", self._device_entry(device, step.phone)))
        link = self.link
        if link is None or not link.publish(messages):
            waiting = link.queue_length if link else 0
            raise Refused(503, f"MQTT queue full ({waiting} messages waiting for the broker); try again")
        registry_changed = joined or _registry_view(device.phone) != _registry_view(step.phone)
        if joined:
            self.devices[device_id] = device
            log.info("new phone %s (%s) from %s", device_id, event.phone_type, event.source)
        self._commit(device, step, now, online=event.kind is not None)
        if registry_changed:
            link.publish([self._devices_message()], force=True)

    def _changes(
        self, device: Device, step: Transition, now: datetime, cause: RawHit | None, online: bool
    ) -> list[Message]:
        old, new = device.phone, step.phone
        out: list[Message] = []
        for rec in step.ended:
            payload = payloads.call_ended(rec, new.phone_type, device.mac_resolved, now, cause)
            out.append(self._device_message(device.id, DeviceTopic.EVENT, payload, retain=False))
        if (old.calls, old.last_call, old.state) != (new.calls, new.last_call, new.state) or (
            device.call_updated is None and online
        ):
            out.append(self._call_message(device.id, new, now))
        if step.ended:
            records = [*reversed(step.ended), *device.history][: self.config.calls.history_size]
            out.append(
                self._device_message(device.id, DeviceTopic.HISTORY, payloads.history(records), retain=True)
            )
        if self._status_due(device, new, now):
            out.append(self._device_message(device.id, DeviceTopic.STATUS, payloads.status(new), retain=True))
        if online and device.online is not True:
            out.append(self._availability_message(device.id, True))
        return out

    def _commit(self, device: Device, step: Transition, now: datetime, online: bool) -> None:
        old = device.phone
        if self._status_due(device, step.phone, now):
            device.status_published = now
        if (old.calls, old.last_call, old.state) != (
            step.phone.calls,
            step.phone.last_call,
            step.phone.state,
        ) or (device.call_updated is None and online):
            device.call_updated = now
        device.history.extendleft(step.ended)
        if online:
            device.online = True
        device.phone = step.phone

    def _status_due(self, device: Device, new: Phone, now: datetime) -> bool:
        old = device.phone
        if device.status_published is None:
            return new.last_seen is not None
        if replace(old, last_seen=None, calls=(), last_call=None, next_key=0) != replace(
            new, last_seen=None, calls=(), last_call=None, next_key=0
        ):
            return True
        return new.last_seen is not None and now - device.status_published >= LAST_SEEN_REFRESH

    # ---- timers ---------------------------------------------------------------------------------

    def tick(self) -> None:
        """End calls whose end was never reported."""
        now = self.clock()
        calls = self.config.calls
        for device in list(self.devices.values()):
            if not device.phone.calls:
                continue
            step = expire(device.phone, now, calls.ring_timeout, calls.stale_timeout)
            if step.phone is device.phone:
                continue
            messages = self._changes(device, step, now, None, online=False)
            if self.link is not None:
                self.link.publish(messages, force=True)
            self._commit(device, step, now, online=False)

    async def run_timers(self, interval: float = 1.0) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                self.tick()
            except Exception:
                log.exception("timer step failed")

    # ---- MQTT -----------------------------------------------------------------------------------

    def on_connected(self) -> None:
        """(Re)state everything retained: the broker may have lost it."""
        if self.link is None:
            return
        now = self.clock()
        messages = [
            self._bridge_message(BridgeTopic.STATE, payloads.availability(True), retain=True),
            self._bridge_message(BridgeTopic.INFO, self._info(), retain=True),
            self._devices_message(),
        ]
        for device in self.devices.values():
            if device.first_seen is None:
                continue
            messages.append(self._call_message(device.id, device.phone, device.call_updated or now))
            messages.append(
                self._device_message(
                    device.id, DeviceTopic.STATUS, payloads.status(device.phone), retain=True
                )
            )
            messages.append(
                self._device_message(
                    device.id, DeviceTopic.HISTORY, payloads.history(device.history), retain=True
                )
            )
            if device.online is not None:
                messages.append(self._availability_message(device.id, device.online))
        self.link.publish(messages, force=True)

    def on_message(self, inbound: Inbound) -> None:
        """A message on a subscribed topic: a device command, a bridge request, HA's birth."""
        target = self.topics.parse(inbound.topic)
        if target is None:
            log.debug("MQTT message on %s ignored", inbound.topic)
            return
        if inbound.retain:
            # A retained command would replay on every restart: never act on one.
            log.warning("ignored a retained message on %s: commands must not be retained", inbound.topic)
            return
        if target.device is None:
            self.on_bridge_request(target.leaf, inbound.payload)
        else:
            self.on_device_command(target.device, target.leaf, inbound.payload)

    def on_bridge_request(self, name: str, payload: bytes) -> None:
        """`<base>/bridge/request/<name>`, always answered on `<base>/bridge/response/<name>`."""
        request = parse_request(payload)
        transaction = request.get("transaction")
        handler = self.requests.get(name)
        if handler is None:
            status, data, error = "error", None, f"unknown request {name!r}; one of {sorted(self.requests)}"
        else:
            try:
                data = handler(request)
                status, error = "ok", None
            except RequestError as err:
                status, data, error = "error", None, str(err)
        response = {"status": status, "data": data, "error": error, "transaction": transaction}
        if self.link is not None:
            topic = self.topics.bridge_response(sanitise_level(name))
            self.link.publish([self._message(topic, response, retain=False)], force=True)

    def request_health_check(self, request: dict[str, object]) -> object:
        return {"healthy": True, **self.health()}

    def on_device_command(self, device: str, leaf: str, payload: bytes) -> None:
        log.warning("%s for %s is not supported yet", leaf, device)

    def offline_message(self) -> Message:
        return self._bridge_message(BridgeTopic.STATE, payloads.availability(False), retain=True)

    def refused(self, status: int, reason: str, source: str | None, method: str, path: str) -> None:
        log.warning("refused %s %s %s from %s: %s", status, method, path, source, reason)
        if self.link is None or status == 503:
            return
        data = {"status": status, "reason": reason, "source": source, "method": method, "path": path}
        self.link.publish([self._bridge_event("request_refused", data)])

    def health(self) -> dict[str, object]:
        link = self.link
        return {
            "status": "ok",
            "mqtt_connected": bool(link and link.connected),
            "queue_length": link.queue_length if link else 0,
            "uptime_seconds": round((self.clock() - self.started).total_seconds(), 3),
            "devices": len(self.devices),
        }

    # ---- messages -------------------------------------------------------------------------------

    def _message(self, topic: str, payload: object, retain: bool) -> Message:
        return Message(topic, payloads.encode(payload), retain=retain, qos=self.config.mqtt.qos)

    def _device_message(self, device: str, leaf: DeviceTopic, payload: object, retain: bool) -> Message:
        return self._message(self.topics.device(device, leaf), payload, retain)

    def _bridge_message(self, leaf: BridgeTopic, payload: object, retain: bool) -> Message:
        return self._message(self.topics.bridge(leaf), payload, retain)

    def _bridge_event(self, kind: str, data: dict[str, object]) -> Message:
        return self._bridge_message(BridgeTopic.EVENT, payloads.bridge_event(kind, data), retain=False)

    def _call_message(self, device: str, phone: Phone, updated: datetime) -> Message:
        return self._device_message(
            device, DeviceTopic.CALL, payloads.call_state(phone, updated), retain=True
        )

    def _availability_message(self, device: str, online: bool) -> Message:
        return self._device_message(
            device, DeviceTopic.AVAILABILITY, payloads.availability(online), retain=True
        )

    def _device_entry(self, device: Device, phone: Phone) -> dict[str, object]:
        return {
            "id": device.id,
            "mac": format_mac(device.mac) if device.mac else None,
            "name": device.name or device.id,
            "phone_type": phone.phone_type,
            "model": phone.model,
            "firmware": phone.firmware,
            "ip": phone.ip,
            "lines": [line for line, _ in phone.lines],
            "first_seen": payloads.iso(device.first_seen),
            "last_seen": payloads.iso(phone.last_seen),
            "configured": device.configured,
        }

    def _devices_message(self) -> Message:
        entries = [self._device_entry(d, d.phone) for d in self.devices.values()]
        return self._bridge_message(BridgeTopic.DEVICES, entries, retain=True)

    def http_url(self) -> str:
        http = self.config.http
        return http.public_url or f"http://{http.host}:{http.port}"

    def _info(self) -> dict[str, object]:
        return {
            "version": __version__,
            "base_topic": self.config.mqtt.base_topic,
            "http_url": self.http_url(),
            "phone_types": sorted(BUILTIN_PROFILES),
            "config": self.config.public_dict(),
        }

    def broker_settings(self, endpoint: Endpoint) -> BrokerSettings:
        mqtt = self.config.mqtt
        return BrokerSettings(
            host=endpoint.host,
            port=endpoint.port,
            client_id=mqtt.client_id or f"amego-bridge-{socket.gethostname()}",
            will=self.offline_message(),
            queue_size=mqtt.queue_size,
            subscriptions=tuple(self.topics.subscriptions()),
            username=endpoint.username or mqtt.username or None,
            password=endpoint.password or mqtt.password or None,
            tls=endpoint.tls,
            keepalive=mqtt.keepalive,
        )
