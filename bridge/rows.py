"""Phones, calls and devices as the store keeps them in SQLite: a value and its row, both ways."""

import json
import sys
from collections.abc import Sequence
from dataclasses import fields
from datetime import UTC, datetime
from functools import lru_cache

import orjson

from bridge.calls import Call, CallRecord, CallResult, CallState, Direction, Hook, LineState, Phone
from bridge.frozen import frozen

CLEAN_STOP = "clean_stop"  # the meta key: "1" once a bridge stopped cleanly, "0" while one runs


@frozen
class StoredDevice:
    id: str
    mac: str | None
    name: str
    mac_resolved: bool
    first_seen: datetime | None
    online: bool | None
    call_updated: datetime | None
    phone: Phone


def to_text(when: datetime | None) -> str | None:
    return _to_text(when) if when else None


@lru_cache(maxsize=1024)  # as payloads.iso: a phone's save repeats the times of its calls
def _to_text(when: datetime) -> str:
    return when.astimezone(UTC).isoformat(timespec="microseconds")


def from_text(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


_CALL_FIELDS = tuple(f.name for f in fields(Call))


def _call_json(call: Call) -> dict[str, object]:
    data: dict[str, object] = {name: getattr(call, name) for name in _CALL_FIELDS}
    for key in ("started", "answered", "updated"):
        data[key] = to_text(getattr(call, key))
    return data


def _call_from_json(data: dict[str, object]) -> Call:
    def text(key: str) -> str | None:
        value = data.get(key)
        return value if isinstance(value, str) else None

    return Call(
        key=str(data["key"]),
        state=CallState(str(data["state"])),
        direction=Direction(d) if (d := text("direction")) else None,
        number=text("number"),
        name=text("name"),
        line=text("line"),
        call_id=text("call_id"),
        started=from_text(text("started")) or datetime.now(UTC),
        answered=from_text(text("answered")),
        updated=from_text(text("updated")) or datetime.now(UTC),
        name_source=text("name_source"),
    )


def phone_json(phone: Phone) -> str:
    """The phone's state without its last call (that one lives in the calls table)."""
    return orjson.dumps(  # written on most hits: orjson is ten times faster than json here
        {
            "device": phone.device,
            "phone_type": phone.phone_type,
            "hook": phone.hook,  # a StrEnum: orjson writes its value
            "calls": [_call_json(c) for c in phone.calls],
            "dnd": phone.dnd,
            "forward": phone.forward,
            "mute": phone.mute,
            "lines": phone.lines,
            "model": phone.model,
            "firmware": phone.firmware,
            "ip": phone.ip,
            "last_seen": to_text(phone.last_seen),
            "next_key": phone.next_key,
        }
    ).decode()


def phone_from_json(text: str, last_call: CallRecord | None) -> Phone:
    data = json.loads(text)
    return Phone(
        device=data["device"],
        phone_type=data["phone_type"],
        hook=Hook(data["hook"]),
        calls=tuple(_call_from_json(c) for c in data["calls"]),
        last_call=last_call,
        dnd=data["dnd"],
        forward=data["forward"],
        mute=data["mute"],
        lines=tuple((line, LineState(state)) for line, state in data["lines"]),
        model=data["model"],
        firmware=data["firmware"],
        ip=data["ip"],
        last_seen=from_text(data["last_seen"]),
        next_key=data["next_key"],
    )


RECORD_COLUMNS = (
    "device, call_id, direction, number, name, name_source, line, started, answered, ended, "
    "ring_seconds, talk_seconds, result"
)


def record_row(rec: CallRecord) -> tuple[object, ...]:
    return (
        rec.device,
        rec.call_id,
        rec.direction.value if rec.direction else None,
        rec.number,
        rec.name,
        rec.name_source,
        rec.line,
        to_text(rec.started),
        to_text(rec.answered),
        to_text(rec.ended),
        rec.ring_seconds,
        rec.talk_seconds,
        rec.result.value,
    )


def record(row: Sequence[object]) -> CallRecord:
    device, call_id, direction, number, name, name_source, line = (
        v if v is None else str(v) for v in row[:7]
    )
    started, answered, ended = (from_text(v if isinstance(v, str) else None) for v in row[7:10])
    return CallRecord(
        call_id=call_id,
        # The values every record of a phone repeats: one string each, not one per record (a
        # restored history of 100,000 records took 17 MB less).
        device=sys.intern(device or ""),
        direction=Direction(direction) if direction else None,
        number=number,
        name=name,
        line=line if line is None else sys.intern(line),
        started=started or datetime.now(UTC),
        answered=answered,
        ended=ended or datetime.now(UTC),
        ring_seconds=float(row[10]),  # type: ignore[arg-type]
        talk_seconds=float(row[11]),  # type: ignore[arg-type]
        result=CallResult(str(row[12])),
        name_source=name_source if name_source is None else sys.intern(name_source),
    )


def device_row(device: StoredDevice) -> tuple[object, ...]:
    return (
        device.id,
        device.mac,
        device.name,
        int(device.mac_resolved),
        to_text(device.first_seen),
        None if device.online is None else int(device.online),
        to_text(device.call_updated),
        phone_json(device.phone),
    )
