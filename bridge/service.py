"""The one stateful orchestrator: phones' state, the call log in memory, MQTT output."""

import asyncio
import json
import logging
import random
import socket
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from bridge import __version__, homeassistant, payloads
from bridge.arp import MacResolver, fallback_id, normalise
from bridge.calls import CallRecord, Phone, Transition, apply, expire
from bridge.config import Config, normalise_device_id, split_host_port
from bridge.control import PhoneControl, Response
from bridge.events import PhoneEvent, RawHit, format_mac
from bridge.feed import DeviceChanged, HitSeen, UiEvent
from bridge.metrics import Metrics
from bridge.mqtt import BrokerSettings, Endpoint, Inbound, Message, MqttLink
from bridge.profile_files import load_profiles
from bridge.topics import RETAINED_DEVICE_TOPICS, BridgeTopic, DeviceTopic, Topics, sanitise_level

log = logging.getLogger(__name__)

# A retained status whose only change is last_seen is restated at most this often.
LAST_SEEN_REFRESH = timedelta(seconds=60)
NAME_MAX = 64


def utcnow() -> datetime:
    return datetime.now(UTC)


def is_mac(device_id: str) -> bool:
    return len(device_id) == 12 and all(c in "0123456789abcdef" for c in device_id)


def address_id(source: str) -> str:
    """The fallback id of a source address, the same whichever way a socket spells it."""
    try:
        return fallback_id(str(normalise(source)))
    except ValueError:
        return fallback_id(source)


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
        self.metrics = Metrics(lambda: self.link)
        self.started = clock()
        # Observers (the status page): told of each hit, accepted or refused, and each phone's change.
        self.listeners: list[Callable[[UiEvent], None]] = []
        # Home Assistant discovery: what was last published per device, and the birth-message delay.
        self.discovered: dict[str, homeassistant.DeviceInfo] = {}
        self.discovery_delay = 5.0  # seconds, upper bound of the random delay after HA's `online`
        self.discovery_timer: asyncio.TimerHandle | None = None
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
        self.requests["device/rename"] = self.request_device_rename
        self.requests["device/remove"] = self.request_device_remove
        self.requests["devices"] = self.request_devices
        self.requests["calls"] = self.request_calls
        self.profiles = load_profiles(config.profiles.dir)  # ProfileError for a bad profile file
        self.control = PhoneControl(config, self.profiles, self.phone_of, self.respond)
        self.arp = MacResolver(config.arp.enabled, config.arp.timeout)
        # `ip-…` ids whose phone moved to its MAC id: later hits without a MAC from there follow it.
        self.moved: dict[str, str] = {}
        # Configured phones by the address in their `ip`: hits that carry no MAC find them there.
        self.configured_at: dict[str, str] = {}
        for dc in config.devices.phones:
            try:
                self.configured_at[str(normalise(split_host_port(dc.ip)[0]))] = dc.id
            except ValueError:
                continue  # empty, or a host name: no hit comes from a name

    def _history(self) -> deque[CallRecord]:
        return deque(maxlen=self.config.calls.history_size)

    # ---- identity -------------------------------------------------------------------------------

    async def identify(self, event: PhoneEvent) -> tuple[str, bool]:
        """The device id of a hit, and whether it rests on a MAC: the MAC the hit carries, else a
        configured phone at its source address, else the MAC of that address (ARP), else `ip-…`."""
        if event.mac:
            return event.mac, True
        source = event.source
        if source is None:
            return fallback_id("unknown"), False
        try:
            address = str(normalise(source))
        except ValueError:
            return fallback_id(source), False
        configured = self.configured_at.get(address)
        if configured is not None:
            return configured, is_mac(configured)
        found = await self.arp.lookup(address)
        if found.mac:
            return found.mac, True
        fallback = fallback_id(address)
        moved = self.moved.get(fallback)
        if moved is not None and moved in self.devices:
            return moved, True
        log.debug("no MAC for %s: %s", source, found.describe())
        return fallback, False

    # ---- hits -----------------------------------------------------------------------------------

    def handle_hit(self, event: PhoneEvent, device_id: str, mac_resolved: bool) -> None:
        """Take one hit: update state and queue its messages, or raise Refused and change nothing."""
        now = self.clock()
        device = self.devices.get(device_id)
        old = self._fallback_device(event, device_id, mac_resolved)
        if device is None and old is None and not self._may_join(device_id):
            raise Refused(403, f"phone {device_id} is not in [devices] and devices.learn is false")
        moving: list[Message] = []
        if old is not None:
            device = self._adopt(old, device, device_id)
            moving = [*self._clear_device(old.id), *self._restate(device, now)]
        joined = device is None or device.first_seen is None
        if device is None:
            device = self._new_device(device_id, event, mac_resolved, now)
        elif device.first_seen is None:  # a configured phone's first hit
            device = replace(device, first_seen=now)
        step = apply(device.phone, event, now) if event.kind is not None else Transition(device.phone)
        messages = [
            *moving,
            self._device_message(
                device_id,
                DeviceTopic.EVENT,
                payloads.event(event, device_id, mac_resolved, now, step.matched),
                retain=False,
            ),
        ]
        messages += self._changes(device, step, now, event.raw, online=event.kind is not None)
        if joined:
            messages.append(self._bridge_event("device_joined", self._device_entry(device, step.phone)))
        if old is not None:
            moved = {"old_id": old.id, **self._device_entry(device, step.phone)}
            messages.append(self._bridge_event("device_updated", moved))
        link = self.link
        if link is None or not link.publish(messages):
            waiting = link.queue_length if link else 0
            raise Refused(503, f"MQTT queue full ({waiting} messages waiting for the broker); try again")
        registry_changed = (
            joined or old is not None or _registry_view(device.phone) != _registry_view(step.phone)
        )
        if joined:
            self.devices[device_id] = device
            log.info("new phone %s (%s) from %s", device_id, event.phone_type, event.source)
        if old is not None:
            del self.devices[old.id]
            self.devices[device_id] = device
            self.moved[old.id] = device_id
            log.info("phone %s from %s is now %s: its MAC is known", old.id, event.source, device_id)
        elif mac_resolved and event.source and address_id(event.source) in self.moved:
            self.moved[address_id(event.source)] = device_id  # the phone at that address now
        self._commit(device, step, now, online=event.kind is not None)
        if registry_changed:
            link.publish([self._devices_message()], force=True)
        self.update_discovery(device)
        if self.listeners:
            raw = event.raw
            self.notify(HitSeen(now, raw.method, raw.path, raw.query, event.source, 200, "", device_id))
            if old is not None:
                self.notify(DeviceChanged(old.id))

    def _may_join(self, device_id: str) -> bool:
        return self.config.devices.learn or self.config.devices.get(device_id) is not None

    def _new_device(self, device_id: str, event: PhoneEvent, mac_resolved: bool, now: datetime) -> Device:
        # A configured phone is new here only after a device/remove: it comes back as configured.
        dc = self.config.devices.get(device_id)
        phone = Phone(device=device_id, phone_type=event.phone_type, ip=(dc.ip or None) if dc else None)
        return Device(
            device_id,
            device_id if is_mac(device_id) else None,
            phone,
            name=dc.name if dc else "",
            configured=dc is not None,
            mac_resolved=mac_resolved,
            first_seen=now,
            history=self._history(),
        )

    def _fallback_device(self, event: PhoneEvent, device_id: str, mac_resolved: bool) -> Device | None:
        """The learned `ip-…` device of this hit's address, when the hit now names its MAC."""
        if not mac_resolved or event.source is None:
            return None
        old = self.devices.get(address_id(event.source))
        if old is None or old.id == device_id or old.configured:
            return None
        return old

    def _adopt(self, old: Device, target: Device | None, device_id: str) -> Device:
        """What `device_id` becomes when `old` (an `ip-…` device) moves to it: a new object, so
        nothing changes until the hit's messages are queued. A target already seen keeps its state."""
        if target is not None and target.first_seen is not None:
            return target
        records = (replace(rec, device=device_id) for rec in old.history)
        last = old.phone.last_call
        return replace(
            old,
            id=device_id,
            mac=device_id,
            mac_resolved=True,
            name=(target.name if target else "") or old.name,
            configured=target.configured if target else False,
            phone=replace(old.phone, device=device_id, last_call=last and replace(last, device=device_id)),
            history=deque(records, maxlen=old.history.maxlen),
        )

    def _restate(self, device: Device, now: datetime) -> list[Message]:
        """A seen device's retained topics, as they stand."""
        if device.first_seen is None:
            return []
        messages = [
            self._call_message(device.id, device.phone, device.call_updated or now),
            self._device_message(device.id, DeviceTopic.STATUS, payloads.status(device.phone), retain=True),
            self._device_message(
                device.id, DeviceTopic.HISTORY, payloads.history(device.history), retain=True
            ),
        ]
        if device.online is not None:
            messages.append(self._availability_message(device.id, device.online))
        return messages

    def _clear_device(self, device_id: str) -> list[Message]:
        """Empty retained payloads for every retained topic of a device, Home Assistant's included."""
        empty = [
            Message(self.topics.device(device_id, leaf), b"", retain=True, qos=self.config.mqtt.qos)
            for leaf in RETAINED_DEVICE_TOPICS
        ]
        return [*empty, self.clear_discovery(device_id)]

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
        if self.listeners:
            self.notify(DeviceChanged(device.id, step.ended))

    def notify(self, event: UiEvent) -> None:
        for listener in self.listeners:
            try:
                listener(event)
            except Exception:
                log.exception("a listener failed on %s", type(event).__name__)

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
        messages += self._discovery_messages()
        self.link.publish(messages, force=True)

    def on_message(self, inbound: Inbound) -> None:
        """A message on a subscribed topic: a device command, a bridge request, HA's birth."""
        if inbound.topic == homeassistant.status_topic(self.config.homeassistant.discovery_prefix):
            self.on_homeassistant_status(inbound.payload)
            return
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
            # A known name is ours (`device/remove` answers on `.../response/device/remove`); any
            # other is echoed as one level.
            topic = self.topics.bridge_response(name if handler is not None else sanitise_level(name))
            self.link.publish([self._message(topic, response, retain=False)], force=True)

    def request_health_check(self, request: dict[str, object]) -> object:
        return {"healthy": True, **self.health()}

    def requested_device(self, request: dict[str, object]) -> Device:
        """The device a request names by `id` (or as a bare value), a MAC in any spelling."""
        raw = request.get("id", request.get("value"))
        if not isinstance(raw, str) or not raw.strip():
            raise RequestError('give the device as {"id": "<device id>"}')
        device = self.devices.get(raw.strip()) or self.devices.get(normalise_device_id(raw) or "")
        if device is None:
            raise RequestError(f"no device {raw.strip()[:80]!r}")
        return device

    def request_device_rename(self, request: dict[str, object]) -> object:
        device = self.requested_device(request)
        name = request.get("name")
        if not isinstance(name, str):
            raise RequestError('give the new name as {"id": "...", "name": "..."}; "" restores the id')
        name = name.strip()
        if len(name) > NAME_MAX or any(ord(c) < 32 or ord(c) == 127 for c in name):
            raise RequestError(f"a name is up to {NAME_MAX} characters, none of them control characters")
        old_name = device.name or device.id
        device.name = name
        entry = self._device_entry(device, device.phone)
        self._publish_forced(
            [self._devices_message(), self._bridge_event("device_updated", {"old_name": old_name, **entry})]
        )
        self.update_discovery(device)
        log.info("phone %s renamed from %r to %r", device.id, old_name, device.name or device.id)
        if self.listeners:
            self.notify(DeviceChanged(device.id))
        return entry

    def request_device_remove(self, request: dict[str, object]) -> object:
        device = self.requested_device(request)
        del self.devices[device.id]
        data = {"id": device.id, "name": device.name or device.id, "configured": device.configured}
        self._publish_forced(
            [
                *self._clear_device(device.id),
                self._bridge_event("device_removed", data),
                self._devices_message(),
            ]
        )
        log.info("phone %s removed; its retained topics are cleared", device.id)
        if self.listeners:
            self.notify(DeviceChanged(device.id))
        return data

    def _publish_forced(self, messages: list[Message]) -> None:
        if self.link is not None:
            self.link.publish(messages, force=True)

    def on_device_command(self, device: str, leaf: str, payload: bytes) -> None:
        """`<base>/<id>/dial` or `.../command`: always answered on `<base>/<id>/response`."""
        self.control.submit(device, leaf, payload)

    def phone_of(self, device_id: str) -> Phone | None:
        device = self.devices.get(device_id)
        return device.phone if device is not None else None

    def respond(self, device_id: str, response: Response) -> None:
        self._publish_forced([self._device_message(device_id, DeviceTopic.RESPONSE, response, retain=False)])

    def request_devices(self, request: dict[str, object]) -> object:
        return [self._device_entry(d, d.phone) for d in self.devices.values()]

    def request_calls(self, request: dict[str, object]) -> object:
        """`{"device": "<id>", "limit": 20}`: recent call records, newest first; all phones without device."""
        limit = request.get("limit", self.config.calls.history_size)
        if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= 1000:
            raise RequestError("limit must be an integer from 1 to 1000")
        wanted = request.get("device")
        if wanted is None:
            records = sorted(
                (rec for d in self.devices.values() for rec in d.history), key=lambda r: r.ended, reverse=True
            )
        else:
            device = self.requested_device({"id": wanted})
            records = list(device.history)
        return payloads.history(records[:limit])

    def offline_message(self) -> Message:
        return self._bridge_message(BridgeTopic.STATE, payloads.availability(False), retain=True)

    def refused(
        self, status: int, reason: str, source: str | None, method: str, path: str, query: str = ""
    ) -> None:
        log.warning("refused %s %s %s from %s: %s", status, method, path, source, reason)
        self.metrics.count_refusal(status, reason)
        if self.listeners:
            self.notify(HitSeen(self.clock(), method, path, query, source, status, reason, None))
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

    # ---- Home Assistant -------------------------------------------------------------------------

    def _homeassistant_subscriptions(self) -> list[str]:
        ha = self.config.homeassistant
        return [homeassistant.status_topic(ha.discovery_prefix)] if ha.enabled else []

    def _discovery_info(self, device: Device) -> homeassistant.DeviceInfo:
        phone = device.phone
        return homeassistant.DeviceInfo(
            device.id, device.mac, device.name, phone.phone_type, phone.model, phone.firmware, phone.ip
        )

    def _discovery_message(self, info: homeassistant.DeviceInfo) -> Message:
        ha = self.config.homeassistant
        payload = homeassistant.discovery(info, self.topics, self.http_url(), self.config.mqtt.qos)
        return self._message(homeassistant.config_topic(ha.discovery_prefix, info.id), payload, ha.retain)

    def _discovery_messages(self) -> list[Message]:
        """Discovery of every known phone; with discovery disabled, the payloads that clear ours."""
        if not self.config.homeassistant.enabled:
            return [self.clear_discovery(device_id) for device_id in list(self.devices)]
        messages = []
        for device in self.devices.values():
            info = self._discovery_info(device)
            messages.append(self._discovery_message(info))
            self.discovered[device.id] = info
        return messages

    def update_discovery(self, device: Device) -> None:
        """Publish a phone's discovery when it is new or what it shows (name, model, firmware) changed."""
        if not self.config.homeassistant.enabled or self.link is None:
            return
        info = self._discovery_info(device)
        if self.discovered.get(device.id) == info:
            return
        self.link.publish([self._discovery_message(info)], force=True)
        self.discovered[device.id] = info

    def clear_discovery(self, device_id: str) -> Message:
        """The retained empty payload that removes a phone from Home Assistant (for device/remove)."""
        self.discovered.pop(device_id, None)
        topic, payload = homeassistant.discovery_clear(self.config.homeassistant.discovery_prefix, device_id)
        return Message(topic, payload, retain=True, qos=self.config.mqtt.qos)

    def on_homeassistant_status(self, payload: bytes) -> None:
        """HA's birth message: republish discovery after a random delay (many clients answer it)."""
        if payload.strip() != b"online" or not self.config.homeassistant.enabled:
            return
        if self.discovery_timer is not None:
            return  # a republish is already due
        delay = random.uniform(0, self.discovery_delay)
        self.discovery_timer = asyncio.get_running_loop().call_later(delay, self.republish_discovery)

    def republish_discovery(self) -> None:
        self.discovery_timer = None
        if self.link is not None:
            self.link.publish(self._discovery_messages(), force=True)

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
        """How phones reach the bridge: `http.public_url`, else this host's address and port."""
        http = self.config.http
        if http.public_url:
            return http.public_url.rstrip("/")
        host = http.host
        if host in ("0.0.0.0", "::", ""):
            try:
                host = socket.gethostbyname(socket.gethostname())
            except OSError:
                host = "127.0.0.1"
        return f"http://{host}:{http.port}"

    def _info(self) -> dict[str, object]:
        return {
            "version": __version__,
            "base_topic": self.config.mqtt.base_topic,
            "http_url": self.http_url(),
            "phone_types": sorted(self.profiles),
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
            subscriptions=(*self.topics.subscriptions(), *self._homeassistant_subscriptions()),
            username=endpoint.username or mqtt.username or None,
            password=endpoint.password or mqtt.password or None,
            tls=endpoint.tls,
            protocol=endpoint.protocol,
            keepalive=mqtt.keepalive,
        )
