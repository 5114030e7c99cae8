"""What simulated phones send: each scenario's hits, read by the bridge's parser and state machine."""

import random
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qsl, urlsplit

import pytest

from bridge.calls import Phone, apply
from bridge.events import PhoneEvent, RawHit, parse_hit, parse_mac
from bridge.profiles import BUILTIN_PROFILES
from bridge.sequences import NAMES, RESULTS, SEQUENCES, Flavour, Scenario, make_phone, play

START = datetime(2026, 11, 26, 8, 0, tzinfo=UTC)


def parse(request_target: str) -> PhoneEvent:
    """A hit as the bridge reads it."""
    parts = urlsplit(request_target)
    event, phone_type = parts.path.strip("/").split("/")
    params = parse_qsl(parts.query, keep_blank_values=True)
    profile = BUILTIN_PROFILES[phone_type]
    raw = RawHit("GET", parts.path, parts.query)
    return parse_hit(event, phone_type, params, profile=profile, source="127.0.0.1", raw=raw)


CASES = [(t, s) for t in SEQUENCES for s in Scenario]


@pytest.mark.parametrize(("phone_type", "scenario"), CASES, ids=[f"{t}-{s}" for t, s in CASES])
def test_each_scenario_ends_its_calls_with_its_results(phone_type: str, scenario: Scenario) -> None:
    phone = make_phone(0 if phone_type == "yealink" else 1, Flavour.MIXED)
    assert phone.phone_type == phone_type
    state = Phone(device=phone.mac, phone_type=phone_type)
    results = []
    for step, request_target in enumerate(play(phone, scenario, random.Random(7))):
        event = parse(request_target)
        assert event.kind is not None, request_target
        assert event.mac == phone.mac
        assert event.local == phone.extension
        transition = apply(state, event, START + timedelta(seconds=step))
        state = transition.phone
        results += [rec.result.value for rec in transition.ended]
    assert tuple(results) == RESULTS[scenario]
    assert state.calls == ()
    if scenario is Scenario.DND:
        assert state.dnd is False


@pytest.mark.parametrize("phone_type", sorted(SEQUENCES))
def test_a_caller_keeps_number_name_and_call_id_through_the_call(phone_type: str) -> None:
    phone = make_phone(0 if phone_type == "yealink" else 1, Flavour.MIXED)
    rng = random.Random(3)
    for _ in range(20):
        events = [parse(t) for t in play(phone, Scenario.INCOMING_ANSWERED, rng)]
        calls = [e for e in events if e.call_id is not None]
        assert len(calls) == 3
        assert len({(e.call_id, e.number) for e in calls}) == 1
        assert (calls[0].number or "").lstrip("+").isdigit()
        assert calls[0].name in {n or None for n in NAMES}  # spaces, umlauts and commas come through


def test_phones_have_distinct_locally_administered_macs() -> None:
    macs = [make_phone(i, Flavour.MIXED).mac for i in range(5000)]
    assert len(set(macs)) == 5000
    assert all(parse_mac(mac) == mac and int(mac[:2], 16) & 0b10 for mac in macs)
