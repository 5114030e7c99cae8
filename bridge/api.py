"""Bridge requests over MQTT: `<base>/bridge/request/<name>`, answered on `.../response/<name>`."""

import json
import logging
import sqlite3
from collections.abc import Callable
from typing import TYPE_CHECKING

from bridge import payloads
from bridge.config import normalise_device_id
from bridge.feed import DeviceChanged
from bridge.metrics import CALL_LOG_REFUSAL
from bridge.registry import Device
from bridge.store import CallQuery
from bridge.topics import sanitise_level

if TYPE_CHECKING:
    from bridge.service import Bridge

log = logging.getLogger(__name__)

NAME_MAX = 64

Request = dict[str, object]


class RequestError(Exception):
    """A request that cannot be done; the message is the response's `error`."""


def parse_request(payload: bytes) -> Request:
    """A request's JSON object; a bare value (`"001565aabbcc"`, `true`) becomes {"value": ...}."""
    text = payload.decode("utf-8", "replace").strip()
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return {"value": text}
    return value if isinstance(value, dict) else {"value": value}


class Requests:
    def __init__(self, bridge: "Bridge") -> None:
        self.bridge = bridge
        self.handlers: dict[str, Callable[[Request], object]] = {
            "health_check": self.health_check,
            "devices": self.devices,
            "calls": self.calls,
            "device/rename": self.device_rename,
            "device/remove": self.device_remove,
        }

    def answer(self, name: str, payload: bytes) -> None:
        request = parse_request(payload)
        handler = self.handlers.get(name)
        data: object = None
        error: str | None = None
        if handler is None:
            error = f"unknown request {name!r}; one of {sorted(self.handlers)}"
        else:
            try:
                data = handler(request)
            except RequestError as err:
                error = str(err)
        response = {
            "status": "error" if error else "ok",
            "data": data,
            "error": error,
            "transaction": request.get("transaction"),
        }
        # A known name is ours (`device/remove` answers on `.../response/device/remove`); any other
        # is echoed as one level.
        bridge = self.bridge
        topic = bridge.topics.bridge_response(name if handler is not None else sanitise_level(name))
        bridge.publish_forced([bridge.out.message(topic, response, retain=False)])

    def device_named(self, request: Request, key: str = "id") -> Device:
        """The device a request names by `id` (or as a bare value), a MAC in any spelling."""
        raw = request.get(key, request.get("value"))
        if not isinstance(raw, str) or not raw.strip():
            raise RequestError(f'give the device as {{"{key}": "<device id>"}}')
        devices = self.bridge.registry.devices
        device = devices.get(raw.strip()) or devices.get(normalise_device_id(raw) or "")
        if device is None:
            raise RequestError(f"no device {raw.strip()[:80]!r}")
        return device

    def health_check(self, request: Request) -> object:
        health = self.bridge.health()
        return {"healthy": health["status"] == "ok", **health}

    def devices(self, request: Request) -> object:
        return self.bridge.registry.entries()

    def calls(self, request: Request) -> object:
        """`{"device": "<id>", "limit": 20}`: recent call records, newest first (all phones: no device)."""
        limit = request.get("limit", self.bridge.config.calls.history_size)
        if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= 1000:
            raise RequestError("limit must be an integer from 1 to 1000")
        wanted = request.get("device")
        device = self.device_named({"device": wanted}, "device").id if wanted is not None else None
        try:
            records = self.bridge.call_log(CallQuery(device=device, limit=limit))
        except sqlite3.Error as err:
            raise RequestError(f"{CALL_LOG_REFUSAL} ({err}); try again") from err
        return payloads.history(records)

    def device_rename(self, request: Request) -> object:
        device = self.device_named(request)
        name = request.get("name")
        if not isinstance(name, str):
            raise RequestError('give the new name as {"id": "...", "name": "..."}; "" restores the id')
        name = name.strip()
        if len(name) > NAME_MAX or any(ord(c) < 32 or ord(c) == 127 for c in name):
            raise RequestError(f"a name is up to {NAME_MAX} characters, none of them control characters")
        bridge = self.bridge
        old_name, kept = device.name or device.id, device.name
        device.name = name
        if not bridge.keeper.save(device):
            device.name = kept
            raise RequestError(f"cannot store the new name ({bridge.keeper.health.error}); try again")
        entry = device.entry()
        bridge.publish_forced(
            [
                bridge.device_list.message(),
                bridge.out.bridge_event("device_updated", {"old_name": old_name, **entry}),
            ]
        )
        bridge.discovery.update(device)
        log.info("phone %s renamed from %r to %r", device.id, old_name, device.name or device.id)
        bridge.notify(DeviceChanged(device.id))
        return entry

    def device_remove(self, request: Request) -> object:
        device = self.device_named(request)
        bridge = self.bridge
        if not bridge.keeper.forget(device):
            error = bridge.keeper.health.error
            raise RequestError(f"cannot remove {device.id} from the store ({error}); try again")
        del bridge.registry.devices[device.id]
        data = {"id": device.id, "name": device.name or device.id, "configured": device.configured}
        bridge.publish_forced(
            [
                *bridge.out.clear(device.id),
                bridge.discovery.clear(device.id),
                bridge.out.bridge_event("device_removed", data),
                bridge.device_list.message(),
            ]
        )
        log.info("phone %s removed; its retained topics are cleared", device.id)
        bridge.notify(DeviceChanged(device.id))
        return data
