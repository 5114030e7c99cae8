from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from bridge.calls import (
    Call,
    CallRecord,
    CallResult,
    CallState,
    Direction,
    Hook,
    LineState,
    Phone,
    Transition,
    apply,
    end_all,
    expire,
)
from bridge.events import EventType, PhoneEvent

E = EventType
T0 = datetime(2026, 11, 26, 8, 40, tzinfo=UTC)
PHONE = Phone(device="001565aabbcc")
NUMBER = "5551234"


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def ev(
    kind: EventType,
    *,
    number: str | None = None,
    call_id: str | None = None,
    line: str | None = None,
    name: str | None = None,
    local: str | None = None,
    ip: str | None = None,
    model: str | None = None,
    firmware: str | None = None,
) -> PhoneEvent:
    return PhoneEvent(
        event_type=kind.value,
        kind=kind,
        phone_type="yealink",
        source="192.168.1.50",
        number=number,
        call_id=call_id,
        line=line,
        name=name,
        local=local,
        ip=ip,
        model=model,
        firmware=firmware,
    )


def call(kind: EventType, call_id: str = "x1", number: str = NUMBER) -> PhoneEvent:
    return ev(kind, call_id=call_id, number=number)


def play(*steps: tuple[float, PhoneEvent], phone: Phone = PHONE) -> tuple[Phone, list[CallRecord]]:
    """The phone after the events (each at T0 + seconds), and every call record they produced."""
    records: list[CallRecord] = []
    for seconds, event in steps:
        step = apply(phone, event, at(seconds))
        phone = step.phone
        records.extend(step.ended)
    return phone, records


# Phones with one call (call_id x1, number NUMBER) in each state, the call started at 0 s.
SETUPS: dict[str, list[tuple[float, PhoneEvent]]] = {
    "idle": [],
    "ringing": [(0, call(E.INCOMING_CALL))],
    "dialing": [(0, ev(E.OFF_HOOK)), (0, call(E.OUTGOING_CALL))],
    "talking": [(0, call(E.INCOMING_CALL)), (2, call(E.CALL_ESTABLISHED))],
    "held": [(0, call(E.INCOMING_CALL)), (2, call(E.CALL_ESTABLISHED)), (4, call(E.HOLD))],
}


def phone_in(setup: str) -> Phone:
    return play(*SETUPS[setup])[0]


# ---- every transition ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("setup", "kind", "state", "result"),
    [
        ("idle", E.INCOMING_CALL, CallState.RINGING, None),
        ("ringing", E.INCOMING_CALL, CallState.RINGING, None),
        ("talking", E.INCOMING_CALL, CallState.TALKING, None),
        ("held", E.INCOMING_CALL, CallState.HELD, None),
        ("idle", E.OUTGOING_CALL, CallState.DIALING, None),
        ("dialing", E.OUTGOING_CALL, CallState.DIALING, None),
        ("idle", E.CALL_ESTABLISHED, CallState.TALKING, None),
        ("ringing", E.CALL_ESTABLISHED, CallState.TALKING, None),
        ("dialing", E.CALL_ESTABLISHED, CallState.TALKING, None),
        ("talking", E.CALL_ESTABLISHED, CallState.TALKING, None),
        ("held", E.CALL_ESTABLISHED, CallState.TALKING, None),
        ("idle", E.CALL_TERMINATED, CallState.IDLE, None),
        ("ringing", E.CALL_TERMINATED, CallState.IDLE, CallResult.MISSED),
        ("dialing", E.CALL_TERMINATED, CallState.OFFHOOK, CallResult.CANCELLED),
        ("talking", E.CALL_TERMINATED, CallState.IDLE, CallResult.ANSWERED),
        ("held", E.CALL_TERMINATED, CallState.IDLE, CallResult.ANSWERED),
        ("ringing", E.MISSED_CALL, CallState.IDLE, CallResult.MISSED),
        ("idle", E.MISSED_CALL, CallState.IDLE, CallResult.MISSED),
        ("ringing", E.REJECT_INCOMING_CALL, CallState.IDLE, CallResult.REJECTED),
        ("idle", E.REJECT_INCOMING_CALL, CallState.IDLE, None),
        ("ringing", E.FORWARD_INCOMING_CALL, CallState.IDLE, CallResult.FORWARDED),
        ("idle", E.FORWARD_INCOMING_CALL, CallState.IDLE, None),
        ("dialing", E.REMOTE_BUSY, CallState.OFFHOOK, CallResult.BUSY),
        ("idle", E.REMOTE_BUSY, CallState.IDLE, None),
        ("ringing", E.CALL_REMOTE_CANCELED, CallState.IDLE, CallResult.MISSED),
        ("talking", E.CALL_REMOTE_CANCELED, CallState.IDLE, CallResult.ANSWERED),
        ("idle", E.CALL_REMOTE_CANCELED, CallState.IDLE, None),
        ("dialing", E.CANCEL_CALLOUT, CallState.OFFHOOK, CallResult.CANCELLED),
        ("idle", E.CANCEL_CALLOUT, CallState.IDLE, None),
        ("talking", E.HOLD, CallState.HELD, None),
        ("talking", E.HELD, CallState.HELD, None),
        ("ringing", E.HOLD, CallState.RINGING, None),
        ("held", E.UNHOLD, CallState.TALKING, None),
        ("held", E.UNHELD, CallState.TALKING, None),
        ("talking", E.UNHOLD, CallState.TALKING, None),
        ("idle", E.OFF_HOOK, CallState.OFFHOOK, None),
        ("ringing", E.ON_HOOK, CallState.RINGING, None),
        ("dialing", E.ON_HOOK, CallState.IDLE, CallResult.CANCELLED),
        ("talking", E.ON_HOOK, CallState.IDLE, CallResult.ANSWERED),
        ("held", E.ON_HOOK, CallState.IDLE, CallResult.ANSWERED),
        ("ringing", E.BUSY_TO_IDLE, CallState.IDLE, CallResult.MISSED),
        ("talking", E.BUSY_TO_IDLE, CallState.IDLE, CallResult.ANSWERED),
        ("dialing", E.BUSY_TO_IDLE, CallState.OFFHOOK, CallResult.CANCELLED),
        ("talking", E.TRANSFER_CALL, CallState.TALKING, None),
        ("ringing", E.SETUP_COMPLETED, CallState.RINGING, None),
        ("talking", E.IP_CHANGE, CallState.TALKING, None),
        ("idle", E.IDLE_TO_BUSY, CallState.IDLE, None),
    ],
)
def test_transition(setup: str, kind: EventType, state: CallState, result: CallResult | None) -> None:
    step = apply(phone_in(setup), call(kind), at(10))
    assert step.phone.state is state
    assert len(step.phone.calls) <= 1  # neither a repeat nor a late hit starts a second call
    assert [record.result for record in step.ended] == ([result] if result else [])
    if result is not None:
        assert step.phone.last_call == step.ended[0]
        assert step.ended[0].device == "001565aabbcc"
        assert step.ended[0].number == NUMBER


@pytest.mark.parametrize(
    ("setup", "kind", "state"),
    [
        ("talking", E.HOLD, CallState.HELD),
        ("ringing", E.CALL_ESTABLISHED, CallState.TALKING),
        ("talking", E.INCOMING_CALL, CallState.TALKING),
        ("talking", E.CALL_TERMINATED, CallState.TALKING),  # as it was just before it ended
    ],
)
def test_matched_is_the_call_the_event_was_about(setup: str, kind: EventType, state: CallState) -> None:
    phone = phone_in(setup)
    step = apply(phone, ev(kind), at(10))
    assert step.matched is not None
    assert (step.matched.key, step.matched.number, step.matched.state) == (phone.calls[0].key, NUMBER, state)


# ---- whole calls -------------------------------------------------------------------------------


def test_incoming_answered() -> None:
    phone, records = play(
        (0, ev(E.INCOMING_CALL, call_id="a", number=NUMBER, name="Alice", line="100")),
        (5, ev(E.CALL_ESTABLISHED, call_id="a", number=NUMBER)),
        (65, ev(E.CALL_TERMINATED, call_id="a", number=NUMBER)),
    )
    assert phone.state is CallState.IDLE
    assert records == [
        CallRecord(
            call_id="a",
            device="001565aabbcc",
            direction=Direction.INCOMING,
            number=NUMBER,
            name="Alice",
            line="100",
            started=at(0),
            answered=at(5),
            ended=at(65),
            ring_seconds=5.0,
            talk_seconds=60.0,
            result=CallResult.ANSWERED,
        )
    ]
    assert phone.last_call == records[0]


def test_incoming_missed() -> None:
    phone, records = play((0, call(E.INCOMING_CALL)), (20, call(E.CALL_TERMINATED)))
    assert phone.state is CallState.IDLE
    [missed] = records
    assert (missed.result, missed.direction, missed.answered) == (CallResult.MISSED, Direction.INCOMING, None)
    assert (missed.ring_seconds, missed.talk_seconds) == (20.0, 0.0)


def test_outgoing_answered() -> None:
    steps = [
        (0, ev(E.OFF_HOOK)),
        (1, call(E.OUTGOING_CALL)),
        (9, call(E.CALL_ESTABLISHED)),
        (39.5, call(E.CALL_TERMINATED)),
        (40, ev(E.ON_HOOK)),
    ]
    phone = PHONE
    states: list[CallState] = []
    records: list[CallRecord] = []
    for seconds, event in steps:
        step = apply(phone, event, at(seconds))
        phone = step.phone
        states.append(phone.state)
        records.extend(step.ended)
    assert states == ["offhook", "dialing", "talking", "offhook", "idle"]
    [done] = records
    assert (done.result, done.direction) == (CallResult.ANSWERED, Direction.OUTGOING)
    assert (done.ring_seconds, done.talk_seconds) == (8.0, 30.5)


@pytest.mark.parametrize("kind", [E.CALL_TERMINATED, E.CANCEL_CALLOUT, E.ON_HOOK])
def test_outgoing_cancelled(kind: EventType) -> None:
    phone, records = play((0, ev(E.OFF_HOOK)), (1, call(E.OUTGOING_CALL)), (7, call(kind)))
    [cancelled] = records
    assert (cancelled.result, cancelled.direction) == (CallResult.CANCELLED, Direction.OUTGOING)
    assert (cancelled.ring_seconds, cancelled.talk_seconds) == (6.0, 0.0)
    assert phone.calls == ()


def test_call_waiting_with_two_call_ids() -> None:
    phone, records = play(
        (0, call(E.INCOMING_CALL, "a", "111")),
        (2, call(E.CALL_ESTABLISHED, "a", "111")),
        (10, call(E.INCOMING_CALL, "b", "222")),
    )
    assert [(c.call_id, c.state) for c in phone.calls] == [("a", "talking"), ("b", "ringing")]
    assert phone.state is CallState.RINGING  # the most recently started call
    phone, records = play(
        (12, call(E.HOLD, "a", "111")),
        (13, call(E.CALL_ESTABLISHED, "b", "222")),
        (43, call(E.CALL_TERMINATED, "b", "222")),
        (45, call(E.UNHOLD, "a", "111")),
        (62, call(E.CALL_TERMINATED, "a", "111")),
        phone=phone,
    )
    assert [(r.call_id, r.number, r.result, r.ring_seconds, r.talk_seconds) for r in records] == [
        ("b", "222", CallResult.ANSWERED, 3.0, 30.0),
        ("a", "111", CallResult.ANSWERED, 2.0, 60.0),
    ]
    assert phone.state is CallState.IDLE


def test_call_waiting_second_call_missed_while_first_talks() -> None:
    phone, records = play(
        (0, call(E.INCOMING_CALL, "a", "111")),
        (2, call(E.CALL_ESTABLISHED, "a", "111")),
        (10, call(E.INCOMING_CALL, "b", "222")),
        (25, call(E.CALL_TERMINATED, "b", "222")),
    )
    assert [(r.call_id, r.result) for r in records] == [("b", CallResult.MISSED)]
    assert [(c.call_id, c.state) for c in phone.calls] == [("a", "talking")]


def test_off_hook_only_leaves_no_record() -> None:
    phone, records = play((0, ev(E.OFF_HOOK)))
    assert (phone.state, phone.hook) == (CallState.OFFHOOK, Hook.OFF)
    phone, records = play((5, ev(E.ON_HOOK)), phone=phone)
    assert (phone.state, phone.hook) == (CallState.IDLE, Hook.ON)
    assert (records, phone.last_call) == ([], None)


def test_lost_call_terminated_ends_the_call_on_on_hook() -> None:
    phone, records = play(
        (0, call(E.INCOMING_CALL)),
        (3, ev(E.OFF_HOOK)),
        (3, call(E.CALL_ESTABLISHED)),
        (30, ev(E.ON_HOOK)),
    )
    assert phone.state is CallState.IDLE
    [done] = records
    assert (done.result, done.ring_seconds, done.talk_seconds) == (CallResult.ANSWERED, 3.0, 27.0)


def test_events_without_call_id_or_number_are_about_the_current_call() -> None:
    phone, records = play(
        (0, ev(E.INCOMING_CALL, number=NUMBER, name="Alice")),
        (4, ev(E.CALL_ESTABLISHED)),
        (5, ev(E.HOLD)),
        (6, ev(E.UNHOLD)),
        (14, ev(E.CALL_TERMINATED)),
    )
    [done] = records
    assert (done.number, done.name, done.call_id) == (NUMBER, "Alice", None)
    assert (done.result, done.ring_seconds, done.talk_seconds) == (CallResult.ANSWERED, 4.0, 10.0)
    assert phone.calls == ()


def test_call_adopts_a_call_id_sent_later() -> None:
    phone, records = play(
        (0, ev(E.INCOMING_CALL, number=NUMBER)),
        (2, ev(E.CALL_ESTABLISHED, number=NUMBER, call_id="late")),
    )
    assert [(c.call_id, c.state) for c in phone.calls] == [("late", "talking")]
    phone, records = play((9, ev(E.CALL_TERMINATED, call_id="late")), phone=phone)
    assert [(r.call_id, r.number, r.result) for r in records] == [("late", NUMBER, CallResult.ANSWERED)]


def test_later_events_fill_in_but_never_erase() -> None:
    phone, _ = play(
        (0, ev(E.CALL_ESTABLISHED, call_id="x")),
        (1, ev(E.HOLD, call_id="x", number=NUMBER, name="Bob", line="100")),
    )
    assert phone.current is not None
    assert (phone.current.number, phone.current.name, phone.current.line) == (NUMBER, "Bob", "100")
    phone, records = play((5, ev(E.CALL_TERMINATED)), phone=phone)
    assert (records[0].number, records[0].name, records[0].line) == (NUMBER, "Bob", "100")


def test_line_picks_the_call_when_nothing_else_identifies_it() -> None:
    phone, _ = play(
        (0, ev(E.INCOMING_CALL, number="111", line="100")),
        (1, ev(E.CALL_ESTABLISHED, line="100")),
        (5, ev(E.INCOMING_CALL, number="222", line="200")),
        (6, ev(E.CALL_TERMINATED, line="100")),
    )
    assert [(c.number, c.state) for c in phone.calls] == [("222", "ringing")]
    phone, _ = play((7, ev(E.CALL_ESTABLISHED, line="200")), phone=phone)
    assert [(c.number, c.state) for c in phone.calls] == [("222", "talking")]


# ---- out of order, repeated and lost events ------------------------------------------------------


def test_established_without_incoming_starts_a_call_of_unknown_direction() -> None:
    phone, _ = play((3, call(E.CALL_ESTABLISHED)))
    assert phone.current is not None
    assert (phone.state, phone.current.direction) == (CallState.TALKING, None)
    assert phone.current.started == phone.current.answered == at(3)
    phone, records = play((13, call(E.CALL_TERMINATED)), phone=phone)
    assert [(r.direction, r.result, r.ring_seconds, r.talk_seconds) for r in records] == [
        (None, CallResult.ANSWERED, 0.0, 10.0)
    ]


def test_second_terminated_is_ignored() -> None:
    phone, first = play(
        (0, call(E.INCOMING_CALL)), (2, call(E.CALL_ESTABLISHED)), (9, call(E.CALL_TERMINATED))
    )
    step = apply(phone, call(E.CALL_TERMINATED), at(9.2))
    assert (step.ended, step.phone.calls, step.phone.last_call) == ((), (), first[0])


def test_duplicate_incoming_is_one_call_with_the_newer_name() -> None:
    phone, _ = play((0, call(E.INCOMING_CALL)), (0.3, ev(E.INCOMING_CALL, call_id="x1", name="Alice")))
    assert [(c.state, c.name, c.started) for c in phone.calls] == [("ringing", "Alice", at(0))]


def test_late_hits_do_not_bring_an_ended_call_back() -> None:
    phone, records = play(
        (0, call(E.INCOMING_CALL)),
        (2, call(E.CALL_ESTABLISHED)),
        (9, call(E.CALL_TERMINATED)),
        (9.1, call(E.CALL_ESTABLISHED)),
        (9.2, call(E.INCOMING_CALL)),
    )
    assert phone.calls == ()
    assert [r.result for r in records] == [CallResult.ANSWERED]


def test_duration_is_never_negative() -> None:
    # The hits arrive out of order: the answer is timed before the ring.
    phone, _ = play((10, call(E.CALL_ESTABLISHED)), (11, call(E.HOLD)))
    phone, records = play((5, call(E.CALL_TERMINATED)), phone=phone)
    assert (records[0].ring_seconds, records[0].talk_seconds) == (0.0, 0.0)


def test_missed_call_after_terminated_is_not_counted_twice() -> None:
    phone, records = play(
        (0, call(E.INCOMING_CALL)),
        (20, call(E.CALL_TERMINATED)),
        (20.1, call(E.MISSED_CALL)),
        (30, ev(E.INCOMING_CALL, number="999")),
        (40, ev(E.CALL_TERMINATED, number="999")),
        (40.1, ev(E.MISSED_CALL, number="999")),
    )
    assert [(r.number, r.result) for r in records] == [(NUMBER, "missed"), ("999", "missed")]
    assert phone.calls == ()


def test_missed_call_alone_is_recorded() -> None:
    phone, records = play((0, ev(E.MISSED_CALL, number=NUMBER, name="Alice", call_id="m1")))
    assert records == [
        CallRecord(
            call_id="m1",
            device="001565aabbcc",
            direction=Direction.INCOMING,
            number=NUMBER,
            name="Alice",
            line=None,
            started=at(0),
            answered=None,
            ended=at(0),
            ring_seconds=0.0,
            talk_seconds=0.0,
            result=CallResult.MISSED,
        )
    ]
    assert (phone.calls, phone.last_call) == ((), records[0])
    # The same caller again, two minutes on, is a new missed call.
    phone, more = play((120, ev(E.MISSED_CALL, number=NUMBER)), phone=phone)
    assert [r.result for r in more] == [CallResult.MISSED]


@pytest.mark.parametrize(
    ("kind", "results"),
    [
        # A call waiting that was never tracked: its missed_call is a record of its own.
        (E.MISSED_CALL, [CallResult.MISSED]),
        (E.REJECT_INCOMING_CALL, []),
        (E.FORWARD_INCOMING_CALL, []),
        (E.CANCEL_CALLOUT, []),
        (E.REMOTE_BUSY, []),
    ],
)
def test_events_before_answer_do_not_end_a_call_in_progress(
    kind: EventType, results: list[CallResult]
) -> None:
    phone, records = play((0, ev(E.INCOMING_CALL)), (2, ev(E.CALL_ESTABLISHED)), (5, ev(kind)))
    assert phone.state is CallState.TALKING
    assert [r.result for r in records] == results


@pytest.mark.parametrize("setup", list(SETUPS))
@pytest.mark.parametrize("kind", list(EventType))
def test_any_event_twice_keeps_calls_sane(setup: str, kind: EventType) -> None:
    phone, records = play(*SETUPS[setup], (10, call(kind)), (10, call(kind)), (11, ev(kind)))
    ids = [c.call_id for c in phone.calls if c.call_id is not None]
    assert len(ids) == len(set(ids))
    assert len(phone.calls) <= 1
    assert len(records) <= 1
    assert all(r.ring_seconds >= 0 and r.talk_seconds >= 0 for r in records)


# ---- timeouts and restarts ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("setup", "after", "result"),
    [
        ("ringing", 181, CallResult.MISSED),
        ("dialing", 181, CallResult.UNKNOWN),
        ("talking", 3603, CallResult.UNKNOWN),
        ("held", 3605, CallResult.UNKNOWN),
    ],
)
def test_expire_ends_quiet_calls(setup: str, after: float, result: CallResult) -> None:
    step = expire(phone_in(setup), at(after), ring_timeout=180, stale_timeout=3600)
    assert step.phone.calls == ()
    assert [r.result for r in step.ended] == [result]
    assert step.ended[0].ended == at(after)
    assert step.phone.last_call == step.ended[0]


@pytest.mark.parametrize(("setup", "after"), [("idle", 9999), ("ringing", 179), ("talking", 600)])
def test_expire_with_nothing_to_end_returns_the_same_phone(setup: str, after: float) -> None:
    phone = phone_in(setup)
    step = expire(phone, at(after), ring_timeout=180, stale_timeout=3600)
    assert step.phone is phone
    assert step.ended == ()


def test_news_keeps_a_ringing_call_alive() -> None:
    phone, _ = play((0, call(E.INCOMING_CALL)), (100, call(E.INCOMING_CALL)))
    assert expire(phone, at(250), ring_timeout=180, stale_timeout=3600).phone is phone


def test_end_all_after_restart() -> None:
    phone, _ = play(
        (0, call(E.INCOMING_CALL, "a", "111")),
        (2, call(E.CALL_ESTABLISHED, "a", "111")),
        (10, call(E.INCOMING_CALL, "b", "222")),
    )
    step = end_all(phone, at(20))
    assert [(r.call_id, r.result, r.talk_seconds) for r in step.ended] == [
        ("a", CallResult.UNKNOWN, 18.0),
        ("b", CallResult.UNKNOWN, 0.0),
    ]
    assert (step.phone.state, step.phone.last_call) == (CallState.IDLE, step.ended[-1])
    assert end_all(PHONE, at(20)).phone is PHONE


# ---- the phone ---------------------------------------------------------------------------------


def test_unknown_event_changes_nothing() -> None:
    phone = phone_in("ringing")
    unknown = PhoneEvent(event_type="keypress", kind=None, phone_type="snom", source="10.0.0.9")
    assert apply(phone, unknown, at(50)) == Transition(phone)


def test_every_known_event_updates_what_the_bridge_knows_of_the_phone() -> None:
    phone = replace(PHONE, model="T46U", firmware="66.86.0.15")
    step = apply(phone, ev(E.SETUP_COMPLETED, firmware="66.86.0.20"), at(7))
    assert step.phone.last_seen == at(7)
    assert (step.phone.phone_type, step.phone.ip) == ("yealink", "192.168.1.50")
    assert (step.phone.model, step.phone.firmware) == ("T46U", "66.86.0.20")
    step = apply(step.phone, ev(E.IP_CHANGE, ip="192.168.1.77"), at(8))
    assert step.phone.ip == "192.168.1.77"


@pytest.mark.parametrize(
    ("kind", "state"),
    [
        (E.REGISTERED, LineState.REGISTERED),
        (E.LOG_ON, LineState.REGISTERED),
        (E.UNREGISTERED, LineState.UNREGISTERED),
        (E.REGISTER_FAILED, LineState.FAILED),
        (E.LOG_OFF, LineState.LOGGED_OFF),
    ],
)
def test_line_states(kind: EventType, state: LineState) -> None:
    phone, _ = play((0, ev(E.REGISTERED, line="200")), (1, ev(kind, line="100")))
    assert phone.lines == (("100", state), ("200", LineState.REGISTERED))


def test_line_name_falls_back_to_local_then_default() -> None:
    phone, _ = play((0, ev(E.REGISTERED, local="101")), (1, ev(E.REGISTER_FAILED)))
    assert phone.lines == (("101", LineState.REGISTERED), ("default", LineState.FAILED))


@pytest.mark.parametrize(
    ("kind", "field", "value"),
    [
        (E.DND_ON, "dnd", True),
        (E.DND_OFF, "dnd", False),
        (E.FORWARD_ON, "forward", True),
        (E.FORWARD_OFF, "forward", False),
        (E.MUTE, "mute", True),
        (E.UNMUTE, "mute", False),
    ],
)
def test_settings(kind: EventType, field: str, value: bool) -> None:
    assert getattr(PHONE, field) is None
    assert getattr(apply(PHONE, ev(kind), at(0)).phone, field) is value


@pytest.mark.parametrize(
    ("hook", "calls", "state"),
    [
        (Hook.ON, (), CallState.IDLE),
        (Hook.OFF, (), CallState.OFFHOOK),
        (Hook.OFF, (CallState.TALKING, CallState.RINGING), CallState.RINGING),
        (Hook.ON, (CallState.HELD,), CallState.HELD),
    ],
)
def test_state_is_the_newest_call_else_the_hook(
    hook: Hook, calls: tuple[CallState, ...], state: CallState
) -> None:
    active = tuple(
        Call(f"c{i}", s, Direction.INCOMING, None, None, None, None, at(i), None, at(i))
        for i, s in enumerate(calls)
    )
    phone = replace(PHONE, hook=hook, calls=active)
    assert phone.state is state
    assert phone.current == (active[-1] if active else None)
