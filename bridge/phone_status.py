"""What a phone's status reply says about its lines, DND and calls. Pure.

Best-effort by design: the vendors document the status requests better than their replies. A
reader takes what it recognises and ignores the rest; a reply with nothing recognisable raises
UnreadableStatus. No message quotes the reply: it may hold account settings, even passwords.
"""

import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

from bridge.calls import LineState
from bridge.phone_commands import StatusReply

Lines = tuple[tuple[str, LineState], ...]


class UnreadableStatus(ValueError):
    """A status reply in which nothing could be recognised; the message says why, never what."""


@dataclass(frozen=True, slots=True)
class PhoneStatus:
    lines: Lines | None = None  # None: the reply told nothing about lines
    call_active: bool | None = None
    dnd: bool | None = None

    def merge(self, other: "PhoneStatus") -> "PhoneStatus":
        lines = self.lines
        if other.lines is not None:
            lines = tuple(sorted({**dict(self.lines or ()), **dict(other.lines)}.items()))
        return PhoneStatus(
            lines,
            self.call_active if other.call_active is None else other.call_active,
            self.dnd if other.dnd is None else other.dnd,
        )


def words(value: object) -> str:
    if value is None:
        return ""  # absent: says nothing, and must not read as the word "none"
    return " ".join(str(value).lower().replace("_", " ").replace("-", " ").split())


REGISTRATION = {
    **dict.fromkeys(
        ("1", "true", "yes", "registered", "online", "ok", "success", "up"), LineState.REGISTERED
    ),
    **dict.fromkeys(
        ("0", "false", "no", "unregistered", "not registered", "offline", "down", "disabled", "none"),
        LineState.UNREGISTERED,
    ),
    **dict.fromkeys(
        ("failed", "fail", "error", "register failed", "registration failed", "reg failed"), LineState.FAILED
    ),
}
TRUE = frozenset({"1", "true", "yes", "on", "enable", "enabled"})
FALSE = frozenset({"0", "false", "no", "off", "disable", "disabled"})
NO_CALL = frozenset({"idle", "0", "false", "none", "no", "on hook", "onhook", "available", "free", ""})


def registration(value: object) -> LineState | None:
    return REGISTRATION.get(words(value))


def flag(value: object) -> bool | None:
    text = words(value)
    return True if text in TRUE else False if text in FALSE else None


def in_call(value: object) -> bool | None:
    """A call state or a count of calls: whether any call is up."""
    text = words(value)
    if text.isdigit():
        return int(text) > 0
    return text not in NO_CALL if text else None


# ---- Yealink `/servlet?phonecfg=get`: a JSON object or `key=value` lines ---------------------------


ACCOUNT_KEY = re.compile(r"(?:.*[._])?(?:account|acct|line)s?[._]?(\d{1,3})[._](.+)")
DND_KEY = re.compile(r"(?:.*[._])?dnd(?:[._]?(?:enable|enabled|status|state|on))?")
CALL_KEYS = frozenset(
    {"call_state", "callstate", "call_status", "callstatus", "phone_state", "active_calls", "calls"}
)
USER_FIELDS = ("user_name", "username", "user", "sip_id", "userid", "user_id", "number")
STATE_FIELDS = ("register_status", "registration", "reg_status", "status", "state", "reg", "registered")
ENABLE_FIELDS = ("enable", "enabled")


def flatten(value: object, prefix: str = "") -> Iterator[tuple[str, object]]:
    """Nested JSON as (dotted lowercase key, scalar); list items are keyed by their id, else 1, 2, …"""
    if isinstance(value, Mapping):
        for key, item in value.items():
            yield from flatten(item, f"{prefix}.{key}".lower() if prefix else str(key).lower())
    elif isinstance(value, list):
        for position, item in enumerate(value, 1):
            name = position
            if isinstance(item, Mapping):
                name = next((item[k] for k in ("id", "account", "index") if k in item), position)
            yield from flatten(item, f"{prefix}.{name}")
    else:
        yield prefix, value


def pairs_of(text: str) -> dict[str, object]:
    text = text.strip()
    if text.startswith(("{", "[")):
        try:
            return dict(flatten(json.loads(text)))
        except ValueError as err:
            raise UnreadableStatus("the reply starts like JSON but is not valid JSON") from err
    pairs: dict[str, object] = {}
    for line in text.splitlines():
        key, equals, value = line.partition("=")
        if equals and key.strip():
            pairs[key.strip().lower()] = value.strip().strip("\"'")
    return pairs


def first(fields: Mapping[str, object], names: tuple[str, ...]) -> object | None:
    return next((fields[n] for n in names if fields.get(n) not in (None, "")), None)


def read_yealink(text: str) -> PhoneStatus:
    pairs = pairs_of(text)
    accounts: dict[int, dict[str, object]] = {}
    dnd: list[bool] = []
    calls: list[bool] = []
    for key, value in pairs.items():
        if account := ACCOUNT_KEY.fullmatch(key):
            accounts.setdefault(int(account[1]), {})[account[2]] = value
        if DND_KEY.fullmatch(key) and (on := flag(value)) is not None:
            dnd.append(on)
        if key.rpartition(".")[2] in CALL_KEYS and (up := in_call(value)) is not None:
            calls.append(up)
    lines: dict[str, LineState] = {}
    for number, fields in sorted(accounts.items()):
        state = registration(first(fields, STATE_FIELDS))
        enabled = flag(first(fields, ENABLE_FIELDS))
        if state is None or enabled is False:
            continue
        lines[str(first(fields, USER_FIELDS) or number)] = state
    if not (lines or dnd or calls):
        raise UnreadableStatus("no account registration, DND or call state found in the reply")
    return PhoneStatus(
        tuple(sorted(lines.items())) if lines else None,
        any(calls) if calls else None,
        any(dnd) if dnd else None,
    )


# ---- Grandstream `api-get_line_status` and `api-get_accounts`: {"response", "body": [...]} ----------


def grandstream_items(text: str) -> list[dict[str, object]]:
    try:
        data = json.loads(text)
    except ValueError as err:
        raise UnreadableStatus("the reply is not JSON") from err
    if not isinstance(data, dict):
        raise UnreadableStatus("the reply is not a JSON object")
    if words(data.get("response", "success")) != "success":
        raise UnreadableStatus("the phone did not answer with success")
    body = data.get("body")
    if isinstance(body, dict):  # some firmware wraps the list, or sends one item bare
        body = next((v for v in body.values() if isinstance(v, list)), [body])
    if not isinstance(body, list):
        raise UnreadableStatus("the reply's body is not a list")
    return [{str(k).lower(): v for k, v in item.items()} for item in body if isinstance(item, dict)]


def read_grandstream_lines(text: str) -> PhoneStatus:
    states = [in_call(item["state"]) for item in grandstream_items(text) if "state" in item]
    known = [up for up in states if up is not None]
    if not known:
        raise UnreadableStatus("no line state found in the reply")
    return PhoneStatus(call_active=any(known))


def read_grandstream_accounts(text: str) -> PhoneStatus:
    lines: dict[str, LineState] = {}
    for position, item in enumerate(grandstream_items(text), 1):
        user = first(item, ("sip_id", "user_id", "userid"))
        if user is None and first(item, ("sip_server",)) is None:
            continue  # an account nobody set up is not a line
        state = registration(item.get("reg", item.get("status")))
        if state is not None:
            lines[str(user or item.get("id") or position)] = state
    return PhoneStatus(lines=tuple(sorted(lines.items())))


READERS: dict[StatusReply, Callable[[str], PhoneStatus]] = {
    StatusReply.YEALINK_PHONECFG: read_yealink,
    StatusReply.GRANDSTREAM_LINE_STATUS: read_grandstream_lines,
    StatusReply.GRANDSTREAM_ACCOUNTS: read_grandstream_accounts,
}


def read_status(kind: StatusReply, text: str) -> PhoneStatus:
    return READERS[kind](text)
