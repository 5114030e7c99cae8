"""The JSON shapes of CONTRACT §2, built from the core's values. Pure.

The core's enums (`CallState`, `Hook`, ...) are StrEnums and go into payloads as they are: JSON
has their values (orjson, and the standard library's fallback, write a str subclass as its
string). Reading `.value` went through a Python descriptor: 1.8 % of a hit's instructions.
"""

import json
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from functools import lru_cache

import orjson

from bridge.calls import Call, CallRecord, Phone
from bridge.events import PhoneEvent, RawHit

Json = dict[str, object]


def iso(when: datetime | None) -> str | None:
    """ISO 8601 UTC with milliseconds: 2026-11-26T08:40:55.123Z."""
    return None if when is None else _iso(when)


# A hit formats the same few instants several times (its own time; its calls' start and answer,
# again on every hit of that call): formatted once each.
@lru_cache(maxsize=1024)
def _iso(when: datetime) -> str:
    # isoformat truncates to milliseconds like strftime would, in a quarter of the time; [:23]
    # drops the offset, as strftime did.
    return when.isoformat(timespec="milliseconds")[:23] + "Z"


def encode(payload: object) -> bytes:
    """Compact JSON, non-ASCII as UTF-8, keys in order.

    Copied to a bytes object of its own size: orjson hands back its whole working buffer (4 kB for
    `{"state":"online"}`, 16 kB for 1.5 kB of JSON), and a message may wait in the MQTT queue for
    as long as the broker is away. 10,000 queued availability messages took 38 MB, now 0.7 MB.
    """
    try:
        return bytes(memoryview(orjson.dumps(payload)))
    except TypeError:  # what orjson does not take (int keys, huge ints): the standard library does
        return json.dumps(payload, separators=(",", ":"), ensure_ascii=False, default=_fragment).encode()


def _fragment(value: object) -> object:
    """A record kept already encoded (`Outbound.record`), for the standard library's encoder."""
    if isinstance(value, orjson.Fragment):
        return orjson.loads(orjson.dumps(value))
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def active_call(call: Call) -> Json:
    return {
        "call_id": call.call_id,
        "state": call.state,
        "direction": call.direction,
        "number": call.number,
        "name": call.name,
        "line": call.line,
        "started": iso(call.started),
        "answered": iso(call.answered),
    }


def record(rec: CallRecord) -> Json:
    return {
        "call_id": rec.call_id,
        "device": rec.device,
        "direction": rec.direction,
        "number": rec.number,
        "name": rec.name,
        "line": rec.line,
        "started": iso(rec.started),
        "answered": iso(rec.answered),
        "ended": iso(rec.ended),
        "ring_seconds": rec.ring_seconds,
        "talk_seconds": rec.talk_seconds,
        "result": rec.result,
        "name_source": rec.name_source,
    }


def call_state(phone: Phone, updated: datetime, recorded: Callable[[CallRecord], object] = record) -> Json:
    """`recorded`: the payload of the last call (`Outbound` keeps those it built, encoded)."""
    current = phone.current
    flat = (
        active_call(current)
        if current
        else dict.fromkeys(("direction", "number", "name", "line", "call_id", "started", "answered"))
    )
    flat.pop("state", None)
    return {
        "state": phone.state,
        **flat,
        "calls": [active_call(c) for c in phone.calls],
        "last_call": recorded(phone.last_call) if phone.last_call else None,
        "updated": iso(updated),
    }


def status(phone: Phone) -> Json:
    return {
        "hook": phone.hook,
        "dnd": phone.dnd,
        "forward": phone.forward,
        "mute": phone.mute,
        "lines": dict(phone.lines),
        "model": phone.model,
        "firmware": phone.firmware,
        "ip": phone.ip,
        "phone_type": phone.phone_type,
        "last_seen": iso(phone.last_seen),
    }


def history(records: Iterable[CallRecord]) -> list[Json]:
    return [record(r) for r in records]


def raw(hit: RawHit) -> Json:
    return {"method": hit.method, "path": hit.path, "query": hit.query}


def event(hit: PhoneEvent, device: str, mac_resolved: bool, time: datetime, matched: Call | None) -> Json:
    """A hit as published on `<id>/event`: number, name and call_id from the hit, else its call."""
    return {
        "event_type": hit.event_type,
        "time": iso(time),
        "device": device,
        "phone_type": hit.phone_type,
        "mac_resolved": mac_resolved,
        "number": hit.number or (matched.number if matched else None),
        "name": hit.name or (matched.name if matched else None),
        "line": hit.line or (matched.line if matched else None),
        "call_id": hit.call_id or (matched.call_id if matched else None),
        "raw": raw(hit.raw),
        "extra": dict(hit.extra),
    }


def call_ended(
    rec: CallRecord,
    phone_type: str,
    mac_resolved: bool,
    time: datetime,
    cause: RawHit | None,
    recorded: Callable[[CallRecord], object] = record,
) -> Json:
    return {
        "event_type": "call_ended",
        "time": iso(time),
        "device": rec.device,
        "phone_type": phone_type,
        "mac_resolved": mac_resolved,
        "number": rec.number,
        "name": rec.name,
        "line": rec.line,
        "call_id": rec.call_id,
        "raw": raw(cause) if cause else None,
        "extra": {},
        "call": recorded(rec),
    }


def availability(online: bool) -> Json:
    return {"state": "online" if online else "offline"}


def bridge_event(kind: str, data: Mapping[str, object]) -> Json:
    return {"type": kind, "data": dict(data)}
