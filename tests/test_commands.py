"""Dial and command payloads, their validation, and the request each vendor's phone gets."""

import re
from datetime import UTC, datetime
from urllib.parse import parse_qsl

import pytest

from bridge.calls import Call, CallState, Direction, Phone
from bridge.commands import (
    Command,
    CommandRefused,
    PhoneCommand,
    build_request,
    call_id_for,
    parse_command,
    parse_dial,
)
from bridge.phone_commands import TemplateError, parse_template
from bridge.profiles import BUILTIN_PROFILES

NOW = datetime(2026, 11, 26, 8, 40, tzinfo=UTC)


@pytest.mark.parametrize(
    ("payload", "number", "line", "transaction"),
    [
        (b"5551234", "5551234", None, None),
        (b"  5551234\n", "5551234", None, None),
        (b"0301234", "0301234", None, None),  # not JSON (leading zero): plain text
        (b"+49 (30) 123-45.67", "+49301234567", None, None),
        (b"*21#", "*21#", None, None),
        (b"#31#5551234", "#31#5551234", None, None),
        (b'"5551234"', "5551234", None, None),
        (b'{"number": "5551234", "line": "100", "transaction": "t1"}', "5551234", "100", "t1"),
        (b'{"number": 5551234, "transaction": 7}', "5551234", None, 7),
        (b'{"number": "sip:alice@pbx.example", "line": "100@pbx.example"}', "sip:alice@pbx.example",
         "100@pbx.example", None),
        (b'{"number": "sips:777@pbx.example:5061"}', "sips:777@pbx.example:5061", None, None),
    ],
)  # fmt: skip
def test_dial_payloads(payload: bytes, number: str, line: str | None, transaction: str | int | None) -> None:
    assert parse_dial(payload) == PhoneCommand(
        Command.DIAL, number=number, line=line, transaction=transaction
    )


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"555;reboot", "invalid number '555;reboot'"),
        (b"1&key=Reboot", "invalid number '1&key=Reboot'"),
        (b"555\r\nX-Injected: 1", "invalid number '555\\r\\nX-Injected: 1'"),
        (b"5" * 300, "invalid number"),
        (b"../../servlet", "invalid number '../../servlet'"),
        (b"555%26key", "invalid number"),
        (b"+", "invalid number '+'"),
        (b"5+55", "invalid number"),
        (b"abc", "invalid number 'abc'"),
        (b"sip:alice@pbx;transport=tcp", "invalid number"),
        (b"sip:alice@pbx/x", "invalid number"),
        (b"sip:" + b"a" * 200 + b"@pbx", "invalid number"),
        (b"", "empty payload"),
        (b"\xff\xfe", "not UTF-8"),
        (b"{", "not valid JSON"),
        (b'{"line": "100"}', "no number to dial"),
        (b'{"number": true}', "number must be a string"),
        (b'{"number": 1.5}', "number must be a string"),
        (b'{"number": "555", "line": "1&key=Reboot"}', "invalid line '1&key=Reboot'"),
        (b'{"number": "555", "transaction": {"a": 1}}', "transaction must be"),
        (b"5" * 5000, "payload longer than 4096 bytes"),
    ],
)
def test_dial_refusals_name_the_reason(payload: bytes, reason: str) -> None:
    with pytest.raises(CommandRefused) as caught:
        parse_dial(payload)
    assert reason in caught.value.reason
    assert caught.value.command == "dial"
    assert not re.search(r"[\r\n]", caught.value.reason)
    assert len(caught.value.reason) < 250


def test_a_refused_dial_still_echoes_its_transaction() -> None:
    with pytest.raises(CommandRefused) as caught:
        parse_dial(b'{"number": "555;reboot", "transaction": "t9"}')
    assert caught.value.transaction == "t9"


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b"hangup", PhoneCommand(Command.HANGUP)),
        (b"  Answer\n", PhoneCommand(Command.ANSWER)),
        (b"dnd_on", PhoneCommand(Command.DND_ON)),
        (b'{"command": "reject", "transaction": "t2"}', PhoneCommand(Command.REJECT, transaction="t2")),
        (b'{"command": "dtmf", "digits": "12#a"}', PhoneCommand(Command.DTMF, digits="12#A")),
        (b'{"command": "key", "key": "F1"}', PhoneCommand(Command.KEY, key="F1")),
        (b'{"command": "dial", "number": "100"}', PhoneCommand(Command.DIAL, number="100")),
    ],
)
def test_command_payloads(payload: bytes, expected: PhoneCommand) -> None:
    assert parse_command(payload) == expected


@pytest.mark.parametrize(
    ("payload", "command", "reason"),
    [
        (b"reboot", None, "unknown command 'reboot'; one of: dial, hangup"),
        (b"5", None, "unknown command 5"),
        (b'{"transaction": "t"}', None, "no command"),
        (b"dtmf", "dtmf", "invalid digits None"),
        (b'{"command": "dtmf", "digits": "12;key=Reboot"}', "dtmf", "invalid digits"),
        (b'{"command": "dtmf", "digits": "' + b"1" * 33 + b'"}', "dtmf", "invalid digits"),
        (b"key", "key", "no key"),
    ],
)
def test_command_refusals(payload: bytes, command: str | None, reason: str) -> None:
    with pytest.raises(CommandRefused) as caught:
        parse_command(payload)
    assert caught.value.command == command
    assert reason in caught.value.reason


# ---- requests per vendor ------------------------------------------------------------------------

DIAL = PhoneCommand(Command.DIAL, number="+4930123", line="100@pbx.example")
DIAL_NO_LINE = PhoneCommand(Command.DIAL, number="5551234")


@pytest.mark.parametrize(
    ("phone_type", "command", "call_id", "method", "target"),
    [
        ("yealink", DIAL, None, "GET", "/servlet?key=number=%2B4930123&outgoing_uri=100@pbx.example"),
        ("yealink", DIAL_NO_LINE, None, "GET", "/servlet?key=number=5551234"),
        ("yealink", PhoneCommand(Command.HANGUP), "c1@10.0.0.5", "GET", "/servlet?key=CALLEND"),
        ("yealink", PhoneCommand(Command.ANSWER), "c1@10.0.0.5", "GET", "/servlet?key=ASW:c1@10.0.0.5"),
        ("yealink", PhoneCommand(Command.ANSWER), None, "GET", "/servlet?key=OK"),
        ("yealink", PhoneCommand(Command.REJECT), "c1", "GET", "/servlet?key=CANCEL:c1"),
        ("yealink", PhoneCommand(Command.REJECT), None, "GET", "/servlet?key=X"),
        ("yealink", PhoneCommand(Command.HOLD), "c1", "GET", "/servlet?key=HOLD:c1"),
        ("yealink", PhoneCommand(Command.HOLD), None, "GET", "/servlet?key=F_HOLD"),
        ("yealink", PhoneCommand(Command.UNHOLD), "c1", "GET", "/servlet?key=UNHOLD:c1"),
        ("yealink", PhoneCommand(Command.DND_ON), None, "GET", "/servlet?key=DNDOn"),
        ("yealink", PhoneCommand(Command.DND_OFF), None, "GET", "/servlet?key=DNDOff"),
        ("yealink", PhoneCommand(Command.KEY, key="f1"), None, "GET", "/servlet?key=F1"),
        ("yealink", PhoneCommand(Command.KEY, key="pound"), None, "GET", "/servlet?key=POUND"),
        ("snom", DIAL, None, "GET", "/command.htm?number=%2B4930123&outgoing_uri=100@pbx.example"),
        ("snom", DIAL_NO_LINE, None, "GET", "/command.htm?number=5551234"),
        ("snom", PhoneCommand(Command.HANGUP), None, "GET", "/command.htm?RELEASE_ALL_CALLS"),
        ("snom", PhoneCommand(Command.ANSWER), "c1", "GET", "/command.htm?key=ENTER"),
        ("snom", PhoneCommand(Command.REJECT), None, "GET", "/command.htm?key=CANCEL"),
        ("snom", PhoneCommand(Command.HOLD), None, "GET", "/command.htm?key=F_R"),
        ("snom", PhoneCommand(Command.DTMF, digits="12#*"), None, "GET", "/command.htm?key_dtmf=12%23*"),
        ("snom", PhoneCommand(Command.KEY, key="#"), None, "GET", "/command.htm?key=%23"),
        ("grandstream", DIAL, None, "GET",
         "/cgi-bin/api-make_call?passcode=p%40ss%26w%3Drd&phonenumber=%2B4930123"),
        ("grandstream", PhoneCommand(Command.HANGUP), None, "GET",
         "/cgi-bin/api-phone_operation?passcode=p%40ss%26w%3Drd&cmd=endcall"),
        ("grandstream", PhoneCommand(Command.ANSWER), None, "GET",
         "/cgi-bin/api-phone_operation?passcode=p%40ss%26w%3Drd&cmd=acceptcall"),
        ("grandstream", PhoneCommand(Command.REJECT), None, "GET",
         "/cgi-bin/api-phone_operation?passcode=p%40ss%26w%3Drd&cmd=rejectcall"),
        ("grandstream", PhoneCommand(Command.HOLD), None, "GET",
         "/cgi-bin/api-phone_operation?passcode=p%40ss%26w%3Drd&cmd=holdcall"),
        ("htek", PhoneCommand(Command.DIAL, number="5551234", line="2"), None, "GET",
         "/Phone_ActionURL&Command=1&Number=5551234&Account=2"),
        ("htek", DIAL_NO_LINE, None, "GET", "/Phone_ActionURL&Command=1&Number=5551234"),
        ("htek", PhoneCommand(Command.HANGUP), None, "GET", "/Phone_ActionURL&Command=2"),
        ("aastra", DIAL_NO_LINE, None, "POST", "/"),
    ],
)  # fmt: skip
def test_each_vendor_command_builds_its_request(
    phone_type: str, command: PhoneCommand, call_id: str | None, method: str, target: str
) -> None:
    commands = BUILTIN_PROFILES[phone_type].commands
    request = build_request(command, phone_type, commands, call_id, "admin", "p@ss&w=rd")
    assert (request.method, request.target) == (method, target)
    assert "p@ss&w=rd" not in repr(request)


def test_aastra_dial_is_an_xml_push_in_a_form() -> None:
    request = build_request(DIAL_NO_LINE, "aastra", BUILTIN_PROFILES["aastra"].commands)
    assert request.content_type == "application/x-www-form-urlencoded"
    assert request.body == (
        b"xml=%3CAastraIPPhoneExecute%3E%3CExecuteItem+URI%3D%22Dial%3A5551234%22%2F%3E"
        b"%3C%2FAastraIPPhoneExecute%3E"
    )


@pytest.mark.parametrize(
    ("phone_type", "command", "reason"),
    [
        ("generic", DIAL_NO_LINE, "no method for dial on generic phones"),
        ("fanvil", PhoneCommand(Command.HANGUP), "no method for hangup on fanvil phones"),
        ("yealink", PhoneCommand(Command.DTMF, digits="1"), "no method for dtmf on yealink phones"),
        ("htek", PhoneCommand(Command.DND_ON), "no method for dnd_on on htek phones"),
        ("yealink", PhoneCommand(Command.KEY, key="Reboot"), "'Reboot' is not a key of yealink phones"),
        ("snom", PhoneCommand(Command.KEY, key="1&x"), "is not a key of snom phones; keys: 0-9, F1-F4"),
        ("grandstream", DIAL_NO_LINE, "dial on grandstream phones needs password"),
    ],
)
def test_what_a_phone_type_cannot_do_is_refused(phone_type: str, command: PhoneCommand, reason: str) -> None:
    with pytest.raises(CommandRefused) as caught:
        build_request(command, phone_type, BUILTIN_PROFILES[phone_type].commands)
    assert reason in caught.value.reason


@pytest.mark.parametrize("nasty", ["1&key=Reboot", "555;reboot", "5\r\n5", "../x", "a b#c", "%26", "+1"])
def test_values_are_escaped_even_past_validation(nasty: str) -> None:
    command = PhoneCommand(Command.DIAL, number=nasty, line=nasty)
    expected = {
        "yealink": [("key", f"number={nasty}"), ("outgoing_uri", nasty)],
        "snom": [("number", nasty), ("outgoing_uri", nasty)],
        "htek": [("Command", "1"), ("Number", nasty), ("Account", nasty)],
    }
    for phone_type, params in expected.items():
        request = build_request(command, phone_type, BUILTIN_PROFILES[phone_type].commands)
        query = re.split(r"[?&]", request.target, maxsplit=1)[1]
        assert parse_qsl(query, keep_blank_values=True) == params
        assert not re.search(r"[\s;#]", request.target)


def test_a_call_id_we_cannot_send_back_falls_back_to_the_key() -> None:
    commands = BUILTIN_PROFILES["yealink"].commands
    request = build_request(PhoneCommand(Command.ANSWER), "yealink", commands, call_id="a;Reboot")
    assert request.target == "/servlet?key=OK"


def call(state: CallState, call_id: str | None, key: str) -> Call:
    return Call(key, state, Direction.INCOMING, "555", None, "100", call_id, NOW, None, NOW)


def test_commands_act_on_the_call_in_their_state() -> None:
    phone = Phone(
        "001565aabbcc",
        calls=(call(CallState.HELD, "held-1", "1"), call(CallState.RINGING, "ring-2", "2")),
    )
    assert call_id_for(Command.ANSWER, phone) == "ring-2"
    assert call_id_for(Command.UNHOLD, phone) == "held-1"
    assert call_id_for(Command.HOLD, phone) is None  # nothing is talking: the fallback key
    assert call_id_for(Command.HANGUP, phone) == "ring-2"
    assert call_id_for(Command.ANSWER, Phone("x")) is None


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("GET /servlet?key={nmber}", "unknown variable {nmber}"),
        ("GET /servlet?key={number!r}", "unknown variable"),
        ("GET /servlet?key={", "literal brace"),
        ("FETCH /servlet", "must start with GET or POST"),
        ("GET servlet", "path must start with '/'"),
        ("GET /ser vlet", "path must start with '/'"),
        ("GET /{number}", "path must start with '/'"),
        ("GET /x?a b=1", "is not a parameter name"),
        ("GET /x?a=1 2", "must be percent-encoded"),
        ("GET /x?a=#1", "must be percent-encoded"),
    ],
)
def test_bad_templates_say_why(text: str, problem: str) -> None:
    with pytest.raises(TemplateError) as caught:
        parse_template(text)
    assert problem in str(caught.value)


def test_setup_lines_for_dialing() -> None:
    yealink = BUILTIN_PROFILES["yealink"].commands.setup_lines
    assert "features.action_uri_limit_ip = {bridge_ip}" in yealink
    assert "features.show_action_uri_option = 0" in yealink
    assert "xml application post list: {bridge_ip}" in BUILTIN_PROFILES["aastra"].commands.setup_lines
    assert any("Remote Control" in s for s in BUILTIN_PROFILES["grandstream"].commands.setup_steps)
