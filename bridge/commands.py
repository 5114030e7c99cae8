"""Dial and command payloads from MQTT, validated; and the HTTP request each one makes on a phone.

Pure. Nothing invalid gets past the parsers (a refusal names the reason), and `build_request`
escapes every value for the place it lands in, so no value can add a parameter or a command.
"""

import html
import json
import re
import string
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from urllib.parse import quote, urlencode

from bridge.calls import CallState, Phone
from bridge.phone_commands import SECRET_VARIABLES, CommandSet, RequestTemplate


class Command(StrEnum):
    DIAL = "dial"
    HANGUP = "hangup"
    ANSWER = "answer"
    REJECT = "reject"
    HOLD = "hold"
    UNHOLD = "unhold"
    DND_ON = "dnd_on"
    DND_OFF = "dnd_off"
    DTMF = "dtmf"
    KEY = "key"


MAX_PAYLOAD = 4096
MAX_NUMBER = 64
MAX_URI = 128
MAX_TRANSACTION = 256

NUMBER = re.compile(rf"\+?[0-9*#]{{1,{MAX_NUMBER}}}")
SIP_URI = re.compile(
    r"sips?:(?:[A-Za-z0-9._~+*-]{1,64}@)?[A-Za-z0-9.-]{1,253}(?::[0-9]{1,5})?", re.IGNORECASE
)
SEPARATORS = re.compile(r"[ .()-]")  # how people write numbers: "+49 (30) 123-45"
LINE = re.compile(r"[A-Za-z0-9._~+*@:-]{1,64}")
DIGITS = re.compile(r"[0-9*#A-D]{1,32}")
CALL_ID = re.compile(r"[A-Za-z0-9._~!*()+@:-]{1,128}")  # a Call-ID we are willing to send back

COMMANDS = {c.value: c for c in Command}

# The call state each command acts on, to pick the call whose call_id goes into the request.
TARGET_STATE = {
    Command.ANSWER: CallState.RINGING,
    Command.REJECT: CallState.RINGING,
    Command.HOLD: CallState.TALKING,
    Command.UNHOLD: CallState.HELD,
}


class CommandRefused(ValueError):
    """A dial or command that is not sent; `reason` goes into the response's `error`."""

    def __init__(self, reason: str, command: str | None = None, transaction: str | int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.command = command
        self.transaction = transaction


@dataclass(frozen=True, slots=True)
class PhoneCommand:
    command: Command
    number: str | None = None
    line: str | None = None
    digits: str | None = None
    key: str | None = None
    transaction: str | int | None = None


@dataclass(frozen=True, slots=True)
class HttpRequest:
    method: str
    path: str  # without the query: what logs may show
    target: str = field(repr=False)  # path and query, escaped; may hold a passcode
    body: bytes = field(default=b"", repr=False)
    content_type: str | None = None


def shown(value: object) -> str:
    """A refused value as a reason shows it: quoted, escaped, and short."""
    text = repr(value)
    return text if len(text) <= 40 else text[:36] + "...'"


def decode(payload: bytes) -> object:
    """A payload as JSON when it is JSON, else as its stripped text."""
    if len(payload) > MAX_PAYLOAD:
        raise CommandRefused(f"payload longer than {MAX_PAYLOAD} bytes")
    try:
        text = payload.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise CommandRefused("payload is not UTF-8") from None
    if not text:
        raise CommandRefused("empty payload")
    try:
        return json.loads(text)
    except ValueError:
        if text.startswith("{"):
            raise CommandRefused("payload starts with '{' but is not valid JSON") from None
        return text


def transaction_of(data: Mapping[str, object]) -> str | int | None:
    value = data.get("transaction")
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    if isinstance(value, str) and len(value) <= MAX_TRANSACTION:
        return value
    raise CommandRefused(f"transaction must be a string of up to {MAX_TRANSACTION} characters or an integer")


def text_field(data: Mapping[str, object], name: str) -> str | None:
    value = data.get(name)
    if value is None or value == "":
        return None
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return str(value)
    if not isinstance(value, str):
        raise CommandRefused(f"{name} must be a string (got {shown(value)})")
    return value


def valid_number(value: str | None) -> str:
    if value is None:
        raise CommandRefused("no number to dial")
    if value[:5].lower().startswith(("sip:", "sips:")):
        if len(value) <= MAX_URI and SIP_URI.fullmatch(value):
            return value
    else:
        plain = SEPARATORS.sub("", value)
        if NUMBER.fullmatch(plain):
            return plain
    raise CommandRefused(
        f"invalid number {shown(value)}: use digits with an optional leading '+' and '*' or '#' "
        f"(up to {MAX_NUMBER}), or a sip: URI (up to {MAX_URI} characters)"
    )


def valid_line(value: str | None) -> str | None:
    if value is None or LINE.fullmatch(value):
        return value
    raise CommandRefused(f"invalid line {shown(value)}: letters, digits and . _ ~ + * @ : - (up to 64)")


def parse_dial(payload: bytes) -> PhoneCommand:
    """`5551234` or `{"number": "5551234", "line": "100", "transaction": "t1"}`."""
    try:
        data = decode(payload)
    except CommandRefused as err:
        raise CommandRefused(err.reason, Command.DIAL) from None
    if not isinstance(data, dict):
        data = {"number": data}
    transaction = None
    try:
        transaction = transaction_of(data)
        return dial_from(data, transaction)
    except CommandRefused as err:
        raise CommandRefused(err.reason, Command.DIAL, transaction) from None


def dial_from(data: Mapping[str, object], transaction: str | int | None) -> PhoneCommand:
    number = valid_number(text_field(data, "number"))
    line = valid_line(text_field(data, "line"))
    return PhoneCommand(Command.DIAL, number=number, line=line, transaction=transaction)


def parse_command(payload: bytes) -> PhoneCommand:
    """`hangup`, or `{"command": "dtmf", "digits": "12#", "transaction": "t2"}` and the like."""
    data = decode(payload)
    if not isinstance(data, dict):
        data = {"command": data}
    name = data.get("command")
    command = COMMANDS.get(name.strip().lower()) if isinstance(name, str) else None
    transaction = None
    try:
        transaction = transaction_of(data)
        if command is None:
            given = "no command" if name is None else f"unknown command {shown(name)}"
            raise CommandRefused(f"{given}; one of: {', '.join(COMMANDS)}")
        return command_from(command, data, transaction)
    except CommandRefused as err:
        raise CommandRefused(err.reason, command, transaction) from None


def command_from(command: Command, data: Mapping[str, object], transaction: str | int | None) -> PhoneCommand:
    if command is Command.DIAL:
        return dial_from(data, transaction)
    if command is Command.DTMF:
        digits = text_field(data, "digits")
        if digits is None or not DIGITS.fullmatch(digits.upper()):
            raise CommandRefused(f"invalid digits {shown(digits)}: 1 to 32 of 0-9 * # A-D")
        return PhoneCommand(command, digits=digits.upper(), transaction=transaction)
    if command is Command.KEY:
        key = text_field(data, "key")
        if key is None:
            raise CommandRefused('no key: send {"command": "key", "key": "OK"}')
        return PhoneCommand(command, key=key, transaction=transaction)
    return PhoneCommand(command, transaction=transaction)


# ---- the request to the phone ------------------------------------------------------------------


def call_id_for(command: Command, phone: Phone) -> str | None:
    """The call_id of the call a command acts on, when the phone's hits told one we can send back."""
    wanted = TARGET_STATE.get(command)
    calls = [c for c in phone.calls if c.call_id and CALL_ID.fullmatch(c.call_id)]
    if wanted is not None:
        calls = [c for c in calls if c.state is wanted]
    return calls[-1].call_id if calls else None


def describe_keys(keys: Iterable[str]) -> str:
    """`0-9, *, F1-F4, OK, ...`: numbered keys as ranges."""
    ranges: dict[str, list[int]] = {}
    words = []
    for key in keys:
        match = re.fullmatch(r"([A-Z_]*)([0-9]+)", key)
        if match:
            ranges.setdefault(match[1], []).append(int(match[2]))
        else:
            words.append(key)
    parts = [f"{p}{min(n)}-{p}{max(n)}" if len(n) > 1 else f"{p}{n[0]}" for p, n in sorted(ranges.items())]
    return ", ".join(parts + sorted(words))


def key_of(command: PhoneCommand, phone_type: str, commands: CommandSet) -> str | None:
    if command.key is None:
        return None
    found = next((k for k in commands.keys if k.upper() == command.key.upper()), None)
    if found is None:
        raise CommandRefused(
            f"{shown(command.key)} is not a key of {phone_type} phones; keys: {describe_keys(commands.keys)}"
        )
    return found


def build_request(
    command: PhoneCommand,
    phone_type: str,
    commands: CommandSet,
    call_id: str | None = None,
    username: str = "",
    password: str = "",
) -> HttpRequest:
    """The request for a command from the phone type's templates; CommandRefused when there is none."""
    templates = commands.requests.get(command.command, ())
    if not templates:
        raise CommandRefused(f"no method for {command.command} on {phone_type} phones")
    values = {
        "number": command.number,
        "line": command.line,
        "call_id": call_id if call_id and CALL_ID.fullmatch(call_id) else None,
        "digits": command.digits,
        "key": key_of(command, phone_type, commands),
        "username": username,
        "password": password,
    }
    known = {name for name, value in values.items() if value}
    for template in templates:
        if template.variables <= known:
            return render(template, {k: v for k, v in values.items() if v})
    gaps: list[frozenset[str]] = [t.variables - known for t in templates]
    fewest: frozenset[str] = min(gaps, key=len)
    missing = sorted(fewest)
    hint = " (set [devices.<id>] username/password)" if set(missing) & SECRET_VARIABLES else ""
    raise CommandRefused(f"{command.command} on {phone_type} phones needs {', '.join(missing)}{hint}")


Escape = Callable[[str, str], str]


def fill(template: str, values: Mapping[str, str], escape: Escape) -> str:
    out = []
    for literal, name, _, _ in string.Formatter().parse(template):
        out.append(literal)
        if name is not None:
            out.append(escape(name, values[name]))
    return "".join(out)


def query_escape(name: str, value: str) -> str:
    # '@', ':' and '*' are plain data in a query (RFC 3986) and read better on the phone's side.
    return quote(value, safe="" if name in SECRET_VARIABLES else "@:*")


def xml_escape(name: str, value: str) -> str:
    return html.escape(value, quote=True)


def as_is(name: str, value: str) -> str:
    return value  # urlencode escapes the whole field afterwards


def render(template: RequestTemplate, values: Mapping[str, str]) -> HttpRequest:
    parts = [
        name if value is None else f"{name}={fill(value, values, query_escape)}"
        for name, value in template.query
    ]
    target = template.path + (template.separator + "&".join(parts) if parts else "")
    if template.form:
        # A field that holds an XML document gets its values XML-escaped first.
        fields = [(n, fill(v, values, xml_escape if v.startswith("<") else as_is)) for n, v in template.form]
        body, content_type = urlencode(fields).encode(), "application/x-www-form-urlencoded"
    elif template.xml:
        body, content_type = fill(template.xml, values, xml_escape).encode(), "text/xml; charset=utf-8"
    else:
        body, content_type = b"", None
    return HttpRequest(template.method, template.path, target, body, content_type)
