"""The phones the bridge knows: configured ones and ones learned from their hits."""

from collections import deque
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import lru_cache

from bridge import payloads
from bridge.arp import fallback_id, normalise
from bridge.calls import CallRecord, Phone
from bridge.config import Config, split_host_port
from bridge.events import format_mac
from bridge.rows import StoredDevice


def is_mac(device_id: str) -> bool:
    return len(device_id) == 12 and all(c in "0123456789abcdef" for c in device_id)


@lru_cache(maxsize=4096)  # on every hit's path; parsing an address is slow
def address_id(source: str) -> str:
    """The fallback id of a source address, the same whichever way a socket spells it."""
    try:
        return fallback_id(str(normalise(source)))
    except ValueError:
        return fallback_id(source)


@dataclass(slots=True)
class Device:
    id: str
    mac: str | None
    phone: Phone
    name: str = ""
    configured: bool = False
    mac_resolved: bool = True
    first_seen: datetime | None = None  # None: configured, never heard from
    online: bool | None = None
    call_updated: datetime | None = None
    status_published: datetime | None = None
    history: deque[CallRecord] = field(default_factory=deque)
    # `entry_json()`, with the phone and the rest of what it was built from.
    _entry_json: tuple[Phone, tuple[object, ...], bytes] | None = field(
        default=None, repr=False, compare=False
    )

    def entry_json(self) -> bytes:
        """`entry()` encoded, built again only when something it shows changed. A restatement of
        `bridge/devices` took 24-44 ms for 10,000 phones on the loop, each time one joined; now
        only the phones heard since the last one are encoded again."""
        shown = (self.id, self.name, self.first_seen, self.configured, self.mac)
        built = self._entry_json
        if built is None or built[0] is not self.phone or built[1] != shown:
            built = self._entry_json = (self.phone, shown, payloads.encode(self.entry()))
        return built[2]

    def entry(self) -> dict[str, object]:
        """This phone in `bridge/devices`."""
        phone = self.phone
        return {
            "id": self.id,
            "mac": format_mac(self.mac) if self.mac else None,
            "name": self.name or self.id,
            "phone_type": phone.phone_type,
            "model": phone.model,
            "firmware": phone.firmware,
            "ip": phone.ip,
            "lines": [line for line, _ in phone.lines],
            "first_seen": payloads.iso(self.first_seen),
            "last_seen": payloads.iso(phone.last_seen),
            "configured": self.configured,
        }

    def stored(
        self,
        phone: Phone | None = None,
        online: bool | None = None,
        call_updated: datetime | None = None,
    ) -> StoredDevice:
        """What the store keeps of this phone; with the arguments, as it will be once they are its
        state."""
        return StoredDevice(
            self.id, self.mac, self.name, self.mac_resolved, self.first_seen,
            self.online if online is None else online,
            self.call_updated if call_updated is None else call_updated,
            self.phone if phone is None else phone,
        )  # fmt: skip

    def moved_to(self, device_id: str, target: "Device | None") -> "Device":
        """What `device_id` becomes when this `ip-…` device turns out to be that MAC: a new object,
        so nothing changes until the hit's messages are queued. A target already seen keeps its state."""
        if target is not None and target.first_seen is not None:
            return target
        last = self.phone.last_call
        return replace(
            self,
            id=device_id,
            mac=device_id,
            mac_resolved=True,
            name=(target.name if target else "") or self.name,
            configured=target.configured if target else False,
            phone=replace(self.phone, device=device_id, last_call=last and replace(last, device=device_id)),
            history=deque((replace(r, device=device_id) for r in self.history), maxlen=self.history.maxlen),
        )


def registry_view(phone: Phone) -> tuple[object, ...]:
    """What `bridge/devices` shows of a phone, but for last_seen."""
    return phone.phone_type, phone.model, phone.firmware, phone.ip, tuple(line for line, _ in phone.lines)


class Registry:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.devices: dict[str, Device] = {}
        # `ip-…` ids whose phone moved to its MAC id: later hits without a MAC from there follow it.
        self.moved: dict[str, str] = {}
        # Configured phones by the address in their `ip`: hits that carry no MAC find them there.
        self.configured_at: dict[str, str] = {}
        for dc in config.devices.phones:
            self.devices[dc.id] = self.new(dc.id, dc.phone_type or "generic", True, None)
            try:
                self.configured_at[str(normalise(split_host_port(dc.ip)[0]))] = dc.id
            except ValueError:
                continue  # empty, or a host name: no hit comes from a name

    def history(self, records: list[CallRecord] | None = None) -> deque[CallRecord]:
        return deque(records or (), maxlen=self.config.calls.history_size)

    def new(self, device_id: str, phone_type: str, mac_resolved: bool, now: datetime | None) -> Device:
        """A device as first seen (`now`), or as configured and not yet seen (`now` None). A
        configured phone is new after a device/remove too: it comes back as configured."""
        dc = self.config.devices.get(device_id)
        phone = Phone(device=device_id, phone_type=phone_type, ip=(dc.ip or None) if dc else None)
        return Device(
            device_id,
            device_id if is_mac(device_id) else None,
            phone,
            name=dc.name if dc else "",
            configured=dc is not None,
            mac_resolved=mac_resolved,
            first_seen=now,
            history=self.history(),
        )

    def restore(self, stored: StoredDevice, records: list[CallRecord]) -> Device:
        """A device as the store kept it; a configured phone keeps its configured name unless renamed."""
        configured = self.devices.get(stored.id)
        device = Device(
            stored.id,
            stored.mac,
            stored.phone,
            name=stored.name or (configured.name if configured else ""),
            configured=configured is not None and configured.configured,
            mac_resolved=stored.mac_resolved,
            first_seen=stored.first_seen,
            online=stored.online,
            call_updated=stored.call_updated,
            history=self.history(records),
        )
        self.devices[device.id] = device
        return device

    def may_join(self, device_id: str) -> bool:
        return self.config.devices.learn or self.config.devices.get(device_id) is not None

    def fallback_of(self, source: str | None, device_id: str, mac_resolved: bool) -> Device | None:
        """The learned `ip-…` device of a hit's address, when the hit now names its MAC."""
        if not mac_resolved or source is None:
            return None
        old = self.devices.get(address_id(source))
        if old is None or old.id == device_id or old.configured:
            return None
        return old

    def entries(self) -> list[dict[str, object]]:
        return [d.entry() for d in self.devices.values()]

    def devices_json(self) -> bytes:
        """`entries()` encoded, as `payloads.encode` would, from each phone's `entry_json()`."""
        return b"[" + b",".join([d.entry_json() for d in self.devices.values()]) + b"]"
