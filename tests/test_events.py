from urllib.parse import parse_qsl

import pytest

from bridge.events import (
    EventType,
    PhoneEvent,
    RawHit,
    normalise_event,
    parse_hit,
    parse_mac,
    parse_party,
    present,
)
from bridge.profiles import profile_for


def hit(event: str, query: str, phone_type: str = "yealink") -> PhoneEvent:
    return parse_hit(
        event,
        phone_type,
        parse_qsl(query, keep_blank_values=True),
        profile=profile_for(phone_type),
        source="192.168.1.50",
        raw=RawHit("GET", f"/{event}/{phone_type}", query),
    )


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("offhook", EventType.OFF_HOOK),
        ("off_hook", EventType.OFF_HOOK),
        ("OffHook", EventType.OFF_HOOK),
        ("off-hook", EventType.OFF_HOOK),
        ("incomingcall", EventType.INCOMING_CALL),
        ("incoming", EventType.INCOMING_CALL),
        ("callestablished", EventType.CALL_ESTABLISHED),
        ("connected", EventType.CALL_ESTABLISHED),
        ("established", EventType.CALL_ESTABLISHED),
        ("callterminated", EventType.CALL_TERMINATED),
        ("Disconnected", EventType.CALL_TERMINATED),
        ("missed", EventType.MISSED_CALL),
        ("logon", EventType.LOG_ON),
        ("logoff", EventType.LOG_OFF),
        ("registerfailed", EventType.REGISTER_FAILED),
        ("reg_failed", EventType.REGISTER_FAILED),
        ("always_fwd_on", EventType.FORWARD_ON),
        ("redirection_off", EventType.FORWARD_OFF),
        ("transfer", EventType.TRANSFER_CALL),
        ("reject", EventType.REJECT_INCOMING_CALL),
        ("setup_finished", EventType.SETUP_COMPLETED),
        ("BUSY-TO-IDLE", EventType.BUSY_TO_IDLE),
    ],
)
def test_events_and_aliases_match_ignoring_case_and_separators(name: str, expected: EventType) -> None:
    assert normalise_event(name) == (expected.value, expected)


def test_every_canonical_event_is_recognised() -> None:
    for kind in EventType:
        assert normalise_event(kind.value.replace("_", "").upper()) == (kind.value, kind)


def test_unknown_event_keeps_its_normalised_name() -> None:
    assert normalise_event("Peripheral-Information") == ("peripheral_information", None)


def test_vendor_alias_comes_from_the_profile() -> None:
    assert normalise_event("setup", profile_for("snom"))[1] is EventType.SETUP_COMPLETED
    assert normalise_event("setup", profile_for("yealink"))[1] is None


@pytest.mark.parametrize(
    "spelling", ["00:15:65:AA:BB:CC", "00-15-65-aa-bb-cc", "001565AABBCC", "0015.65aa.bbcc", " 001565aabbcc "]
)
def test_mac_in_any_spelling(spelling: str) -> None:
    assert parse_mac(spelling) == "001565aabbcc"


@pytest.mark.parametrize(
    "bad", ["$mac", "00:15:65:AA:BB", "zz1565aabbcc", "000000000000", "", "00:15:65:AA:BB:CC:DD"]
)
def test_not_a_mac(bad: str) -> None:
    assert parse_mac(bad) is None


@pytest.mark.parametrize(
    "absent", ["", "  ", "$remote", "$display_remote", "$call-id", "$$REMOTENUMBER$$", None]
)
def test_empty_and_unsubstituted_values_are_absent(absent: str | None) -> None:
    assert present(absent) is None


@pytest.mark.parametrize(
    ("value", "number", "name"),
    [
        ("sip:5551234@pbx", "5551234", None),
        ('"Alice" <sip:5551234@pbx;user=phone>', "5551234", "Alice"),
        ("Bob <sips:777@pbx.example:5061>", "777", "Bob"),
        ("<sip:100@10.0.0.1>", "100", None),
        ("tel:+4930123456", "+4930123456", None),
        ("5551234", "5551234", None),
        ("5551234@pbx.example", "5551234", None),
        ('"Smith, \\"J\\"" <sip:42@x>', "42", 'Smith, "J"'),
    ],
)
def test_sip_uris_and_name_addr_yield_the_number(value: str, number: str, name: str | None) -> None:
    assert parse_party(value) == (number, name)


def test_seed_incoming_call_hit() -> None:
    event = hit(
        "incomingcall",
        "device=00:15:65:AA:BB:CC&local=sip:100@pbx&remote=sip:5551234@pbx&displayremote=Alice",
    )
    assert event.kind is EventType.INCOMING_CALL
    assert event.mac == "001565aabbcc"
    assert (event.number, event.name, event.local, event.line) == ("5551234", "Alice", "100", "100")
    assert event.remote_raw == "sip:5551234@pbx"


def test_phone_amego_leading_ampersand_quirk() -> None:
    event = hit("callestablished", "&device=001565aabbcc&local=100")
    assert event.mac == "001565aabbcc"
    assert event.extra == {}


@pytest.mark.parametrize("name", ["callid", "call_id", "call-id", "CallID"])
def test_call_id_spellings(name: str) -> None:
    assert hit("incoming", f"{name}=abc@pbx").call_id == "abc@pbx"


def test_unsubstituted_variables_do_not_become_values() -> None:
    event = hit("incoming", "device=$mac&remote=$remote&displayremote=$display_remote&callid=$call_id")
    assert (event.mac, event.number, event.name, event.call_id) == (None, None, None, None)


def test_unknown_params_are_kept_unchanged_under_extra() -> None:
    event = hit("offhook", "device=001565aabbcc&exp_number=2&Foo=$bar")
    assert event.extra == {"exp_number": "2", "Foo": "$bar"}


def test_line_aliases_and_vendor_params() -> None:
    assert hit("incoming", "account=2&local=100").line == "2"
    assert hit("incoming", "active_user=sip:200@pbx").line == "200"
    snom = hit("incoming", "phone_ip=192.168.1.9&call-id=x1", phone_type="snom")
    assert (snom.ip, snom.call_id) == ("192.168.1.9", "x1")
    aastra = hit("incoming", "remotenumber=5551234&incomingname=Carol", phone_type="aastra")
    assert (aastra.number, aastra.name) == ("5551234", "Carol")


def test_first_present_value_wins() -> None:
    assert hit("incoming", "remote=$remote&remote=sip:42@x").number == "42"
