"""How each vendor's phones are remote-controlled: request templates per command, as data.

Pure data and the parser of its template strings. A template reads like the request it makes:
`GET /servlet?key=number={number}&outgoing_uri={line}`. Literal text is trusted (ours, or the
user's profile file); every `{variable}` is filled with a value escaped for where it lands.
A command may have several templates: the first whose variables all have a value is used, so
a template needing the call's `{call_id}` can fall back to one that does not.
"""

import re
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType

VARIABLES = frozenset({"number", "line", "call_id", "digits", "key", "username", "password"})
SECRET_VARIABLES = frozenset({"username", "password"})

_METHOD = re.compile(r"GET|POST")
_PATH = re.compile(r"/[A-Za-z0-9/._~!$'()*+,;:@%=-]*")
_NAME = re.compile(r"[A-Za-z0-9._~-]+")
_LITERAL = re.compile(r"[A-Za-z0-9._~!$'()*+,;=:@/?%-]*")


class TemplateError(ValueError):
    """A request template that cannot be used; the message says what is wrong."""


class AuthKind(StrEnum):
    HTTP = "http"  # basic or digest, from the device's credentials
    PASSCODE = "passcode"  # the password travels in the query (Grandstream); no HTTP auth


def fields_of(template: str) -> frozenset[str]:
    """The variables a template text uses; TemplateError for anything but a plain `{name}`."""
    names = set()
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as err:
        raise TemplateError(f"{template!r}: {err} (write a literal brace as {{{{ or }}}})") from err
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if name not in VARIABLES or spec or conversion:
            known = ", ".join("{" + v + "}" for v in sorted(VARIABLES))
            raise TemplateError(f"unknown variable {{{name}}} in {template!r}; known: {known}")
        names.add(name)
    return frozenset(names)


def literals_of(template: str) -> str:
    return "".join(literal for literal, *_ in string.Formatter().parse(template))


@dataclass(frozen=True, slots=True)
class RequestTemplate:
    method: str
    path: str
    query: tuple[tuple[str, str | None], ...] = ()  # (name, value template); None: a bare flag
    separator: str = "?"  # Htek puts its parameters after "&" in the path
    form: tuple[tuple[str, str], ...] = ()  # form body fields (name, value template)
    xml: str = ""  # an XML document as the body

    @property
    def variables(self) -> frozenset[str]:
        found: frozenset[str] = frozenset()
        for text in [v for _, v in self.query if v is not None] + [v for _, v in self.form] + [self.xml]:
            found |= fields_of(text)
        return found


def parse_template(text: str) -> RequestTemplate:
    """`METHOD /path?name=value&flag`, or with `&` as the first separator (`/Phone_ActionURL&Command=1`)."""
    method, _, target = text.strip().partition(" ")
    if not _METHOD.fullmatch(method):
        raise TemplateError(f"{text!r}: must start with GET or POST, then a space and the path")
    target = target.strip()
    if "?" in target:
        path, separator, query = target.partition("?")
    else:
        path, separator, query = target.partition("&")
    if not _PATH.fullmatch(path):
        raise TemplateError(f"{text!r}: the path must start with '/' and hold no variables or spaces")
    items: list[tuple[str, str | None]] = []
    for item in query.split("&") if query else []:
        name, equals, value = item.partition("=")
        if not _NAME.fullmatch(name):
            raise TemplateError(f"{text!r}: {name!r} is not a parameter name")
        check_literal(value, text)
        items.append((name, value if equals else None))
    return RequestTemplate(method, path, tuple(items), separator or "?")


def check_literal(value: str, where: str) -> None:
    fields_of(value)
    if not _LITERAL.fullmatch(literals_of(value)):
        raise TemplateError(f"{where!r}: {value!r} holds a character that must be percent-encoded")


def post_form(path: str, **fields: str) -> RequestTemplate:
    for value in fields.values():
        fields_of(value)
    return RequestTemplate("POST", path, form=tuple(fields.items()))


def templates(*texts: str) -> tuple[RequestTemplate, ...]:
    return tuple(parse_template(text) for text in texts)


class StatusReply(StrEnum):
    """Which reader a status request's reply goes to (bridge.poll)."""

    YEALINK_PHONECFG = "yealink_phonecfg"
    GRANDSTREAM_LINE_STATUS = "grandstream_line_status"
    GRANDSTREAM_ACCOUNTS = "grandstream_accounts"


@dataclass(frozen=True, slots=True)
class StatusRequest:
    """A request that reads a phone's registration, DND or call state, and how to read its reply."""

    reply: StatusReply
    request: RequestTemplate


# Without a status request the bridge asks only whether the phone answers at all.
REACHABILITY = parse_template("GET /")


@dataclass(frozen=True, slots=True)
class CommandSet:
    """A phone type's remote control: request templates by command name, and how to judge replies."""

    requests: Mapping[str, tuple[RequestTemplate, ...]] = field(default_factory=lambda: MappingProxyType({}))
    keys: frozenset[str] = frozenset()  # what `{"command":"key"}` may press
    success: frozenset[int] = frozenset({200})
    error_body: str = ""  # regex: a reply with a success status whose body matches is a failure
    auth: AuthKind = AuthKind.HTTP
    default_username: str = ""  # the vendor's factory login, tried when none is configured
    default_password: str = field(default="", repr=False)
    refused_hint: str = ""  # added to a 403's reason
    setup_lines: tuple[str, ...] = ()  # provisioning lines; {bridge_ip} is filled in
    setup_steps: tuple[str, ...] = ()  # web UI steps; {bridge_ip} is filled in
    status: tuple[StatusRequest, ...] = ()  # polled in order; none: reachability only


NO_COMMANDS = CommandSet()


def request_table(
    table: Mapping[str, str | tuple[str, ...] | RequestTemplate],
) -> Mapping[str, tuple[RequestTemplate, ...]]:
    built: dict[str, tuple[RequestTemplate, ...]] = {}
    for name, value in table.items():
        if isinstance(value, RequestTemplate):
            built[name] = (value,)
        else:
            built[name] = templates(value) if isinstance(value, str) else templates(*value)
    return MappingProxyType(built)


def numbered(prefix: str, count: int) -> frozenset[str]:
    return frozenset(f"{prefix}{n}" for n in range(1, count + 1))


DIGIT_KEYS = frozenset("0123456789*")

YEALINK_KEYS = DIGIT_KEYS | numbered("F", 4) | numbered("L", 16) | numbered("D", 60) | frozenset(
    {
        "POUND", "OK", "ENTER", "X", "F_TRANSFER", "F_HOLD", "F_CONFERENCE", "VOLUME_UP",
        "VOLUME_DOWN", "MUTE", "MSG", "RD", "UP", "DOWN", "LEFT", "RIGHT", "SPEAKER", "HEADSET",
        "OFFHOOK", "ONHOOK", "ANSWER",
    }
)  # fmt: skip

SNOM_KEYS = DIGIT_KEYS | numbered("F", 4) | numbered("P", 48) | frozenset(
    {
        "#", "CANCEL", "ENTER", "OFFHOOK", "ONHOOK", "LEFT", "RIGHT", "UP", "DOWN", "VOLUME_UP",
        "VOLUME_DOWN", "MENU", "REDIAL", "DND", "REC", "SPEAKER", "TRANSFER", "F_R", "DISCONNECT",
    }
)  # fmt: skip

YEALINK_COMMANDS = CommandSet(
    requests=request_table(
        {
            "dial": (
                "GET /servlet?key=number={number}&outgoing_uri={line}",
                "GET /servlet?key=number={number}",
            ),
            "hangup": "GET /servlet?key=CALLEND",
            # With no call_id from the phone's hits, the key that does the same to the current call:
            # OK answers, X rejects, F_HOLD toggles hold.
            "answer": ("GET /servlet?key=ASW:{call_id}", "GET /servlet?key=OK"),
            "reject": ("GET /servlet?key=CANCEL:{call_id}", "GET /servlet?key=X"),
            "hold": ("GET /servlet?key=HOLD:{call_id}", "GET /servlet?key=F_HOLD"),
            "unhold": ("GET /servlet?key=UNHOLD:{call_id}", "GET /servlet?key=F_HOLD"),
            "dnd_on": "GET /servlet?key=DNDOn",
            "dnd_off": "GET /servlet?key=DNDOff",
            "key": "GET /servlet?key={key}",
        }
    ),
    keys=YEALINK_KEYS,
    status=(
        StatusRequest(
            StatusReply.YEALINK_PHONECFG, parse_template("GET /servlet?phonecfg=get&accounts=1&dnd=1")
        ),
    ),
    default_username="admin",
    default_password="admin",
    refused_hint=(
        "add the bridge's address to the phone's Action URI allow IP list "
        "(Features > Remote Control, or features.action_uri_limit_ip)"
    ),
    setup_lines=(
        "features.action_uri.enable = 1",
        "features.action_uri_limit_ip = {bridge_ip}",
        "features.show_action_uri_option = 0",
    ),
    setup_steps=(
        "Features > Remote Control > Action URI Allow IP List: {bridge_ip} (blank refuses every request)",
        "Without features.show_action_uri_option = 0 the phone asks 'Allow remote control?' once: press OK",
        "Give the bridge the phone's admin login: [devices.<id>] username and password (default admin/admin)",
    ),
)

SNOM_COMMANDS = CommandSet(
    requests=request_table(
        {
            "dial": (
                "GET /command.htm?number={number}&outgoing_uri={line}",
                "GET /command.htm?number={number}",
            ),
            "hangup": "GET /command.htm?RELEASE_ALL_CALLS",
            "answer": "GET /command.htm?key=ENTER",
            "reject": "GET /command.htm?key=CANCEL",
            "hold": "GET /command.htm?key=F_R",  # F_R toggles hold
            "unhold": "GET /command.htm?key=F_R",
            "dtmf": "GET /command.htm?key_dtmf={digits}",
            "key": "GET /command.htm?key={key}",
        }
    ),
    keys=SNOM_KEYS,
    success=frozenset({200, 302}),  # firmware 8.7 answers a dial with a redirect to index.htm
    setup_steps=(
        "Give the bridge the phone's HTTP user and password: [devices.<id>] username and password",
        'With Authentication Scheme (http_scheme) set to digest, also set [devices.<id>] auth = "digest"',
        "If HTTP user, HTTP password and admin password were all changed, turn hidden tags off",
    ),
)

GRANDSTREAM_COMMANDS = CommandSet(
    requests=request_table(
        {
            "dial": "GET /cgi-bin/api-make_call?passcode={password}&phonenumber={number}",
            "hangup": "GET /cgi-bin/api-phone_operation?passcode={password}&cmd=endcall",
            "answer": "GET /cgi-bin/api-phone_operation?passcode={password}&cmd=acceptcall",
            "reject": "GET /cgi-bin/api-phone_operation?passcode={password}&cmd=rejectcall",
            "hold": "GET /cgi-bin/api-phone_operation?passcode={password}&cmd=holdcall",
        }
    ),
    auth=AuthKind.PASSCODE,
    error_body=r'"response"\s*:\s*"error"',
    status=(
        StatusRequest(
            StatusReply.GRANDSTREAM_LINE_STATUS,
            parse_template("GET /cgi-bin/api-get_line_status?passcode={password}"),
        ),
        StatusRequest(
            StatusReply.GRANDSTREAM_ACCOUNTS,
            parse_template("GET /cgi-bin/api-get_accounts?passcode={password}"),
        ),
    ),
    refused_hint="add the bridge's address to the phone's Action URI Allowed IP List",
    setup_steps=(
        "Network > Remote Control (GRP260x: Network Settings > Advanced Settings > Remote Control)",
        "Action URI Support: Enabled",
        "Action URI Allowed IP List: {bridge_ip}",
        "Remote Control Pop up Window Support: Disabled",
        "Give the bridge the admin (or user) password: [devices.<id>] password; it is sent as passcode",
    ),
)

HTEK_COMMANDS = CommandSet(
    requests=request_table(
        {
            "dial": (
                "GET /Phone_ActionURL&Command=1&Number={number}&Account={line}",
                "GET /Phone_ActionURL&Command=1&Number={number}",
            ),
            "hangup": "GET /Phone_ActionURL&Command=2",
        }
    ),
    setup_steps=(
        "Give the bridge the phone's web login: [devices.<id>] username and password (basic auth)",
        "[devices.<id>] line is the account number, 1-4; without it the phone picks one",
    ),
)

# The push goes to the web root (third-party usage; the Dial: syntax is not in the vendor text we have).
AASTRA_COMMANDS = CommandSet(
    requests=request_table(
        {
            "dial": post_form(
                "/", xml='<AastraIPPhoneExecute><ExecuteItem URI="Dial:{number}"/></AastraIPPhoneExecute>'
            ),
        }
    ),
    default_username="admin",
    default_password="22222",
    refused_hint="add the bridge's address to the phone's xml application post list",
    setup_lines=("xml application post list: {bridge_ip}",),
)

FANVIL_COMMANDS = CommandSet(
    setup_steps=(
        "No built-in remote control for Fanvil yet: add a user profile with its commands "
        "(see docs/phone-control.md)",
    ),
)
