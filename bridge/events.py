"""Our event vocabulary, and the parsing of one Action URL hit into a PhoneEvent."""

import re
from collections.abc import Iterable, Mapping
from dataclasses import field
from enum import StrEnum
from functools import lru_cache

from bridge.frozen import frozen
from bridge.profiles import Profile


class EventType(StrEnum):
    OFF_HOOK = "off_hook"
    ON_HOOK = "on_hook"
    INCOMING_CALL = "incoming_call"
    OUTGOING_CALL = "outgoing_call"
    CALL_ESTABLISHED = "call_established"
    CALL_TERMINATED = "call_terminated"
    MISSED_CALL = "missed_call"
    LOG_ON = "log_on"
    LOG_OFF = "log_off"
    REGISTERED = "registered"
    REGISTER_FAILED = "register_failed"
    UNREGISTERED = "unregistered"
    DND_ON = "dnd_on"
    DND_OFF = "dnd_off"
    FORWARD_ON = "forward_on"
    FORWARD_OFF = "forward_off"
    HOLD = "hold"
    UNHOLD = "unhold"
    HELD = "held"
    UNHELD = "unheld"
    MUTE = "mute"
    UNMUTE = "unmute"
    TRANSFER_CALL = "transfer_call"
    REJECT_INCOMING_CALL = "reject_incoming_call"
    FORWARD_INCOMING_CALL = "forward_incoming_call"
    REMOTE_BUSY = "remote_busy"
    CALL_REMOTE_CANCELED = "call_remote_canceled"
    CANCEL_CALLOUT = "cancel_callout"
    SETUP_COMPLETED = "setup_completed"
    IP_CHANGE = "ip_change"
    IDLE_TO_BUSY = "idle_to_busy"
    BUSY_TO_IDLE = "busy_to_idle"


# Aliases every phone type accepts (CONTRACT §1). Vendor-specific ones live in profiles.
ALIASES: dict[str, EventType] = {
    "incoming": EventType.INCOMING_CALL,
    "outgoing": EventType.OUTGOING_CALL,
    "established": EventType.CALL_ESTABLISHED,
    "connected": EventType.CALL_ESTABLISHED,
    "terminated": EventType.CALL_TERMINATED,
    "disconnected": EventType.CALL_TERMINATED,
    "missed": EventType.MISSED_CALL,
    "reg_failed": EventType.REGISTER_FAILED,
    "always_fwd_on": EventType.FORWARD_ON,
    "redirection_on": EventType.FORWARD_ON,
    "always_fwd_off": EventType.FORWARD_OFF,
    "redirection_off": EventType.FORWARD_OFF,
    "transfer": EventType.TRANSFER_CALL,
    "reject": EventType.REJECT_INCOMING_CALL,
    "setup_finished": EventType.SETUP_COMPLETED,
}


def event_key(name: str) -> str:
    """The form events are matched in: lower case, `_` and `-` ignored."""
    return name.lower().replace("_", "").replace("-", "")


_EVENTS_BY_KEY: dict[str, EventType] = {event_key(e.value): e for e in EventType} | {
    event_key(alias): e for alias, e in ALIASES.items()
}


def normalise_event(name: str, profile: Profile | None = None) -> tuple[str, EventType | None]:
    """The published name of an event and its canonical type (None when unknown)."""
    key = event_key(name)
    kind = _EVENTS_BY_KEY.get(key)
    if kind is None and profile is not None:
        canonical = profile.event_aliases.get(key)
        kind = EventType(canonical) if canonical is not None else None
    if kind is not None:
        return kind.value, kind
    return name.lower().replace("-", "_"), None


@frozen
class RawHit:
    method: str
    path: str
    query: str  # as received, with the token's value masked


@frozen
class PhoneEvent:
    event_type: str  # canonical name, or the normalised name of an unknown event
    kind: EventType | None  # None: unknown event, changes no state
    phone_type: str
    source: str | None  # the address the hit came from
    mac: str | None = None  # 12 lowercase hex digits, as sent by the phone
    ip: str | None = None  # as the phone reports it
    model: str | None = None
    firmware: str | None = None
    local: str | None = None  # number of the local side
    local_raw: str | None = None
    local_name: str | None = None
    number: str | None = None  # number of the remote side
    remote_raw: str | None = None
    name: str | None = None  # display name of the remote side
    name_source: str | None = None  # "phone" when the phone sent the name, "contacts" when looked up
    line: str | None = None
    call_id: str | None = None
    extra: Mapping[str, str] = field(default_factory=dict)
    raw: RawHit = RawHit("GET", "", "")


class BadHit(ValueError):
    """A hit that is malformed beyond use (answered 400)."""


# ---- values --------------------------------------------------------------------------------

_UNSUBSTITUTED = re.compile(r"^(\$\$[A-Za-z0-9_]+\$\$|\$[A-Za-z_][A-Za-z0-9_.\-]*(\([^)]*\))?)$")
_HEX12 = re.compile(r"^[0-9a-f]{12}$")
_WORD = re.compile(r"[A-Za-z0-9_.\-]+")
_MAC_SEPARATORS = re.compile(r"[:\-. ]")
_NAME_ADDR = re.compile(r'^\s*(?:"((?:[^"\\]|\\.)*)"|([^<"]*?))\s*<([^>]*)>')


def present(value: str | None) -> str | None:
    """A value, or None when it is empty or a variable the phone did not substitute."""
    if value is None:
        return None
    value = value.strip()
    if not value or (value[0] == "$" and _UNSUBSTITUTED.match(value)):
        return None
    return value


@lru_cache(maxsize=1024)  # as parse_party: a phone sends its own MAC on every hit
def parse_mac(value: str | None) -> str | None:
    """A MAC in any common spelling as 12 lowercase hex digits; None when it is not one."""
    if value is None:
        return None
    digits = _MAC_SEPARATORS.sub("", value.strip().lower())
    if not _HEX12.match(digits) or digits in ("000000000000", "ffffffffffff"):
        return None
    return digits


def format_mac(mac: str) -> str:
    return ":".join(mac[i : i + 2] for i in range(0, 12, 2))


@lru_cache(maxsize=2048)  # a phone's own party on every hit, the other one on every hit of a call
def parse_party(value: str | None) -> tuple[str | None, str | None]:
    """(number, display name) of a SIP URI, a name-addr or a plain number."""
    if value is None:
        return None, None
    name: str | None = None
    uri = value.strip()
    match = _NAME_ADDR.match(uri)
    if match:
        name = (match.group(1) if match.group(1) is not None else match.group(2) or "").strip() or None
        if name is not None:
            name = name.replace('\\"', '"')
        uri = match.group(3).strip()
    lowered = uri.lower()
    for scheme in ("sips:", "sip:", "tel:"):
        if lowered.startswith(scheme):
            uri = uri[len(scheme) :]
            break
    number = uri.split(";", 1)[0].split("?", 1)[0]
    if "@" in number:
        number = number.split("@", 1)[0]
    number = number.strip()
    return (number or None), name


# ---- a whole hit ------------------------------------------------------------------------------

# Parameter names of CONTRACT §1, with their accepted aliases, keyed by their matching form.
PARAMS: dict[str, str] = {
    "device": "device",
    "mac": "device",
    "local": "local",
    "remote": "remote",
    "displayremote": "displayremote",
    "display_remote": "displayremote",
    "displaylocal": "displaylocal",
    "display_local": "displaylocal",
    "model": "model",
    "firmware": "firmware",
    "ip": "ip",
    "callid": "callid",
    "call_id": "callid",
    "call-id": "callid",
    "line": "line",
    "account": "line",
    "active_user": "line",
    "token": "token",
}


def canonical_params(
    params: Iterable[tuple[str, str]], profile: Profile | None = None
) -> tuple[dict[str, str], dict[str, str]]:
    """Split a hit's parameters into known ones (by canonical name) and the rest (`extra`).

    The first value present wins, kept as `present` gives it; a name that is empty (Phone Amego's
    `?&device=`) is skipped.
    """
    known: dict[str, str] = {}
    extra: dict[str, str] = {}
    for name, value in params:
        if not name:
            continue
        lowered = name.lower()
        canonical = PARAMS.get(lowered)
        if canonical is None and profile is not None:
            canonical = profile.param_aliases.get(lowered)
        if canonical is None:
            extra.setdefault(name, value)
            continue
        if canonical not in known:
            kept = present(value)
            if kept is not None:
                known[canonical] = kept
    return known, extra


def parse_hit(
    event: str,
    phone_type: str,
    params: Iterable[tuple[str, str]],
    *,
    profile: Profile,
    source: str | None,
    raw: RawHit,
) -> PhoneEvent:
    if not event or len(event) > 64 or not _WORD.fullmatch(event):
        raise BadHit(f"event name {event[:64]!r} is not a word")
    event_type, kind = normalise_event(event, profile)
    known, extra = canonical_params(params, profile)
    get = known.get  # every value is present (or None): `canonical_params` kept only those
    local_raw, remote_raw = get("local"), get("remote")
    local, local_addr_name = parse_party(local_raw)
    number, remote_addr_name = parse_party(remote_raw)
    name = get("displayremote") or remote_addr_name
    line = get("line")
    if line is not None:
        line = parse_party(line)[0]
    return PhoneEvent(
        event_type=event_type,
        kind=kind,
        phone_type=phone_type,
        source=source,
        mac=parse_mac(get("device")),
        ip=get("ip"),
        model=get("model"),
        firmware=get("firmware"),
        local=local,
        local_raw=local_raw,
        local_name=get("displaylocal") or local_addr_name,
        number=number,
        remote_raw=remote_raw,
        name=name,
        name_source="phone" if name else None,
        line=line or local,
        call_id=get("callid"),
        extra=extra,
        raw=raw,
    )
