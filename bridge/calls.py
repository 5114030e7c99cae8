"""Call state machine: phone events in, active calls and call records out.

Pure: time is always the `now` argument (timezone-aware UTC); no clock, no I/O.
"""

import functools
from collections.abc import Callable, Iterable, Sequence, Set
from datetime import datetime, timedelta
from enum import StrEnum

from bridge.events import EventType, PhoneEvent
from bridge.frozen import frozen, replace


class CallState(StrEnum):
    IDLE = "idle"
    OFFHOOK = "offhook"
    DIALING = "dialing"
    RINGING = "ringing"
    TALKING = "talking"
    HELD = "held"


class Direction(StrEnum):
    INCOMING = "incoming"
    OUTGOING = "outgoing"


class CallResult(StrEnum):
    ANSWERED = "answered"
    MISSED = "missed"
    REJECTED = "rejected"
    FORWARDED = "forwarded"
    CANCELLED = "cancelled"
    BUSY = "busy"
    UNKNOWN = "unknown"


class Hook(StrEnum):
    ON = "on"
    OFF = "off"


class LineState(StrEnum):
    REGISTERED = "registered"
    UNREGISTERED = "unregistered"
    FAILED = "failed"
    LOGGED_OFF = "logged_off"


@frozen
class Call:
    key: str  # stable for the call's life, whatever ids the phone sends later
    state: CallState  # dialing, ringing, talking or held
    direction: Direction | None
    number: str | None
    name: str | None
    line: str | None
    call_id: str | None
    started: datetime
    answered: datetime | None
    updated: datetime  # time of the last news about this call
    name_source: str | None = None  # "phone" or "contacts"


@frozen
class CallRecord:
    call_id: str | None
    device: str
    direction: Direction | None
    number: str | None
    name: str | None
    line: str | None
    started: datetime
    answered: datetime | None
    ended: datetime
    ring_seconds: float
    talk_seconds: float
    result: CallResult
    name_source: str | None = None


@frozen
class Phone:
    device: str
    phone_type: str = "generic"
    hook: Hook = Hook.ON
    calls: tuple[Call, ...] = ()  # active calls, in order started
    last_call: CallRecord | None = None
    dnd: bool | None = None
    forward: bool | None = None
    mute: bool | None = None
    lines: tuple[tuple[str, LineState], ...] = ()  # sorted by line name
    model: str | None = None
    firmware: str | None = None
    ip: str | None = None
    last_seen: datetime | None = None
    next_key: int = 1

    @property
    def current(self) -> Call | None:
        return self.calls[-1] if self.calls else None

    @property
    def state(self) -> CallState:
        if self.calls:
            return self.calls[-1].state
        return CallState.OFFHOOK if self.hook is Hook.OFF else CallState.IDLE


@frozen
class Transition:
    phone: Phone
    ended: tuple[CallRecord, ...] = ()
    matched: Call | None = None  # after the step; for an ended call, as it was just before ending


Handler = Callable[[Phone, PhoneEvent, datetime], Transition]
CallStep = Callable[[Phone, Call | None, PhoneEvent, datetime], Transition]

# A late hit about a call that has just ended must not bring it back.
LATE = timedelta(seconds=60)
IN_CALL = frozenset({CallState.TALKING, CallState.HELD, CallState.DIALING})


# ---- call identity -----------------------------------------------------------------------------


def match(phone: Phone, event: PhoneEvent, prefer: Set[CallState]) -> Call | None:
    """The active call an event is about: by call_id, else by remote number, else the current call."""
    calls = phone.calls
    if event.call_id is not None:
        return last(c for c in calls if c.call_id == event.call_id) or last(
            c for c in calls if c.call_id is None and c.number in (None, event.number)
        )
    if event.number is not None:
        return last(c for c in calls if c.number == event.number)
    if event.line is not None and any(c.line == event.line for c in calls):
        calls = tuple(c for c in calls if c.line == event.line)
    return last(c for c in calls if c.state in prefer) or last(calls)


def last(calls: Iterable[Call]) -> Call | None:
    found = None
    for call in calls:
        found = call
    return found


def just_ended(phone: Phone, event: PhoneEvent, now: datetime) -> bool:
    """Whether the event carries the call_id of the call that ended last, within the last minute."""
    ended = phone.last_call
    return (
        event.call_id is not None
        and ended is not None
        and ended.call_id == event.call_id
        and now - ended.ended <= LATE
    )


def already_missed(phone: Phone, event: PhoneEvent, now: datetime) -> bool:
    ended = phone.last_call
    if event.call_id is not None or ended is None:
        return just_ended(phone, event, now)
    # Without a call_id, a hit that names the same caller, or none, is about the same call.
    same = event.number in (None, ended.number)
    return ended.result is CallResult.MISSED and same and now - ended.ended <= LATE


# ---- building blocks ---------------------------------------------------------------------------


def seen(phone: Phone, event: PhoneEvent, now: datetime) -> Phone:
    return replace(
        phone,
        last_seen=now,
        phone_type=event.phone_type,
        model=event.model or phone.model,
        firmware=event.firmware or phone.firmware,
        ip=event.ip or event.source or phone.ip,
    )


def fill(call: Call, event: PhoneEvent, now: datetime) -> Call:
    """The call with what the event tells about it; a known value is never lost."""
    return replace(
        call,
        number=event.number or call.number,
        name=event.name or call.name,
        name_source=event.name_source if event.name else call.name_source,
        line=call.line or event.line,
        call_id=call.call_id or event.call_id,
        updated=now,
    )


def update(phone: Phone, call: Call) -> Transition:
    calls = tuple(call if c.key == call.key else c for c in phone.calls)
    return Transition(replace(phone, calls=calls), matched=call)


def new_call(
    event: PhoneEvent, now: datetime, key: str, state: CallState, direction: Direction | None
) -> Call:
    return Call(
        key=key,
        state=state,
        direction=direction,
        number=event.number,
        name=event.name,
        line=event.line,
        call_id=event.call_id,
        started=now,
        answered=now if state is CallState.TALKING else None,
        updated=now,
        name_source=event.name_source if event.name else None,
    )


def start(
    phone: Phone, event: PhoneEvent, now: datetime, state: CallState, direction: Direction | None
) -> Transition:
    if just_ended(phone, event, now):
        return Transition(phone)  # a late hit must not bring an ended call back
    call = new_call(event, now, f"c{phone.next_key}", state, direction)
    return Transition(replace(phone, calls=(*phone.calls, call), next_key=phone.next_key + 1), matched=call)


def seconds(delta: timedelta) -> float:
    return round(max(delta.total_seconds(), 0.0), 3)


def record(phone: Phone, call: Call, now: datetime, result: CallResult) -> CallRecord:
    return CallRecord(
        call_id=call.call_id,
        device=phone.device,
        direction=call.direction,
        number=call.number,
        name=call.name,
        line=call.line,
        started=call.started,
        answered=call.answered,
        ended=now,
        ring_seconds=seconds((call.answered or now) - call.started),
        talk_seconds=seconds(now - call.answered) if call.answered is not None else 0.0,
        result=result,
        name_source=call.name_source,
    )


def end(phone: Phone, endings: Sequence[tuple[Call, CallResult]], now: datetime) -> Transition:
    """Ends the calls with their results; with nothing to end, the phone is returned as it was."""
    if not endings:
        return Transition(phone)
    keys = {call.key for call, _ in endings}
    records = tuple(record(phone, call, now, result) for call, result in endings)
    calls = tuple(c for c in phone.calls if c.key not in keys)
    return Transition(replace(phone, calls=calls, last_call=records[-1]), ended=records)


def end_one(phone: Phone, call: Call, now: datetime, result: CallResult) -> Transition:
    return replace(end(phone, [(call, result)], now), matched=call)


def terminated_result(call: Call) -> CallResult:
    if call.answered is not None:
        return CallResult.ANSWERED
    if call.direction is Direction.INCOMING:
        return CallResult.MISSED
    if call.direction is Direction.OUTGOING:
        return CallResult.CANCELLED
    return CallResult.UNKNOWN


# ---- transitions -------------------------------------------------------------------------------


def incoming(phone: Phone, call: Call | None, event: PhoneEvent, now: datetime) -> Transition:
    if call is None:
        return start(phone, event, now, CallState.RINGING, Direction.INCOMING)
    if call.state is CallState.RINGING:
        return update(phone, fill(call, event, now))
    return Transition(phone, matched=call)  # a late repeat of a call that is past ringing


def outgoing(phone: Phone, call: Call | None, event: PhoneEvent, now: datetime) -> Transition:
    if call is None:
        return start(phone, event, now, CallState.DIALING, Direction.OUTGOING)
    return update(phone, fill(call, event, now))


def established(phone: Phone, call: Call | None, event: PhoneEvent, now: datetime) -> Transition:
    if call is None:
        return start(phone, event, now, CallState.TALKING, None)
    if call.state is CallState.TALKING:
        return Transition(phone, matched=call)
    talking = replace(fill(call, event, now), state=CallState.TALKING, answered=call.answered or now)
    return update(phone, talking)


def terminated(phone: Phone, call: Call | None, event: PhoneEvent, now: datetime) -> Transition:
    if call is None:
        return Transition(phone)
    return end_one(phone, fill(call, event, now), now, terminated_result(call))


def missed(phone: Phone, call: Call | None, event: PhoneEvent, now: datetime) -> Transition:
    if call is not None and call.answered is None:
        return end_one(phone, fill(call, event, now), now, CallResult.MISSED)
    if already_missed(phone, event, now):
        return Transition(phone)  # the call_terminated before it has ended the call already
    # A call never seen ringing, e.g. a second call while the matched one is in progress.
    lost = new_call(event, now, "", CallState.RINGING, Direction.INCOMING)
    missed_call = record(phone, lost, now, CallResult.MISSED)
    return Transition(replace(phone, last_call=missed_call), ended=(missed_call,))


def remote_canceled(phone: Phone, call: Call | None, event: PhoneEvent, now: datetime) -> Transition:
    if call is None:
        return Transition(phone)
    result = CallResult.ANSWERED if call.answered is not None else CallResult.MISSED
    return end_one(phone, fill(call, event, now), now, result)


def ends_unanswered(result: CallResult) -> CallStep:
    """Ends a call that was never answered; such an event about a call in progress is ignored."""

    def step(phone: Phone, call: Call | None, event: PhoneEvent, now: datetime) -> Transition:
        if call is None or call.answered is not None:
            return Transition(phone)
        return end_one(phone, fill(call, event, now), now, result)

    return step


def moves(source: CallState, target: CallState) -> CallStep:
    def step(phone: Phone, call: Call | None, event: PhoneEvent, now: datetime) -> Transition:
        if call is None or call.state is not source:
            return Transition(phone, matched=call)
        return update(phone, replace(fill(call, event, now), state=target))

    return step


def on_call(step: CallStep, *prefer: CallState) -> Handler:
    """A handler for an event about one call: it is matched, preferring calls in these states."""

    def handle(phone: Phone, event: PhoneEvent, now: datetime) -> Transition:
        return step(phone, match(phone, event, set(prefer)), event, now)

    return handle


def hang_up(phone: Phone, now: datetime, states: Set[CallState]) -> Transition:
    """Ends every active call in these states, by the call_terminated rule."""
    endings = [(c, terminated_result(c)) for c in phone.calls if c.state in states]
    return replace(end(phone, endings, now), matched=endings[-1][0] if endings else None)


def on_hook(phone: Phone, event: PhoneEvent, now: datetime) -> Transition:
    # A ringing call keeps ringing: the handset is down while it rings.
    return hang_up(replace(phone, hook=Hook.ON), now, IN_CALL)


def busy_to_idle(phone: Phone, event: PhoneEvent, now: datetime) -> Transition:
    return hang_up(phone, now, {CallState.RINGING, *IN_CALL})


def sets_line(state: LineState) -> Handler:
    def handle(phone: Phone, event: PhoneEvent, now: datetime) -> Transition:
        lines = dict(phone.lines)
        lines[event.line or event.local or "default"] = state
        return Transition(replace(phone, lines=tuple(sorted(lines.items()))))

    return handle


def nothing(phone: Phone, event: PhoneEvent, now: datetime) -> Transition:
    return Transition(phone)


TRANSITIONS: dict[EventType, Handler] = {
    EventType.INCOMING_CALL: on_call(incoming, CallState.RINGING),
    EventType.OUTGOING_CALL: on_call(outgoing, CallState.DIALING),
    EventType.CALL_ESTABLISHED: on_call(established, CallState.RINGING, CallState.DIALING),
    EventType.CALL_TERMINATED: on_call(terminated),
    EventType.MISSED_CALL: on_call(missed, CallState.RINGING),
    EventType.REJECT_INCOMING_CALL: on_call(ends_unanswered(CallResult.REJECTED), CallState.RINGING),
    EventType.FORWARD_INCOMING_CALL: on_call(ends_unanswered(CallResult.FORWARDED), CallState.RINGING),
    EventType.REMOTE_BUSY: on_call(ends_unanswered(CallResult.BUSY), CallState.DIALING),
    EventType.CANCEL_CALLOUT: on_call(ends_unanswered(CallResult.CANCELLED), CallState.DIALING),
    EventType.CALL_REMOTE_CANCELED: on_call(remote_canceled, CallState.RINGING, CallState.DIALING),
    EventType.HOLD: on_call(moves(CallState.TALKING, CallState.HELD), CallState.TALKING),
    EventType.HELD: on_call(moves(CallState.TALKING, CallState.HELD), CallState.TALKING),
    EventType.UNHOLD: on_call(moves(CallState.HELD, CallState.TALKING), CallState.HELD),
    EventType.UNHELD: on_call(moves(CallState.HELD, CallState.TALKING), CallState.HELD),
    EventType.OFF_HOOK: lambda phone, event, now: Transition(replace(phone, hook=Hook.OFF)),
    EventType.ON_HOOK: on_hook,
    EventType.BUSY_TO_IDLE: busy_to_idle,
    EventType.REGISTERED: sets_line(LineState.REGISTERED),
    EventType.LOG_ON: sets_line(LineState.REGISTERED),
    EventType.UNREGISTERED: sets_line(LineState.UNREGISTERED),
    EventType.REGISTER_FAILED: sets_line(LineState.FAILED),
    EventType.LOG_OFF: sets_line(LineState.LOGGED_OFF),
    EventType.DND_ON: lambda phone, event, now: Transition(replace(phone, dnd=True)),
    EventType.DND_OFF: lambda phone, event, now: Transition(replace(phone, dnd=False)),
    EventType.FORWARD_ON: lambda phone, event, now: Transition(replace(phone, forward=True)),
    EventType.FORWARD_OFF: lambda phone, event, now: Transition(replace(phone, forward=False)),
    EventType.MUTE: lambda phone, event, now: Transition(replace(phone, mute=True)),
    EventType.UNMUTE: lambda phone, event, now: Transition(replace(phone, mute=False)),
    EventType.TRANSFER_CALL: nothing,
    EventType.SETUP_COMPLETED: nothing,
    EventType.IP_CHANGE: nothing,
    EventType.IDLE_TO_BUSY: nothing,
}


# ---- entry points ------------------------------------------------------------------------------


def apply(phone: Phone, event: PhoneEvent, now: datetime) -> Transition:
    if event.kind is None:
        return Transition(phone)
    handler = TRANSITIONS.get(event.kind, nothing)
    return handler(seen(phone, event, now), event, now)


def expire(phone: Phone, now: datetime, ring_timeout: float, stale_timeout: float) -> Transition:
    """Ends calls with no news for too long; when none has, the same Phone object is returned."""
    limits = _limits(ring_timeout, stale_timeout)
    endings = []
    for call in phone.calls:
        limit, result = limits[call.state]
        if now - call.updated > limit:
            endings.append((call, result))
    return end(phone, endings, now)


@functools.cache
def _limits(ring_timeout: float, stale_timeout: float) -> dict[CallState, tuple[timedelta, CallResult]]:
    """How long a call may go without news in each state, and how it ends then (the tick asks for
    every phone with a call, every second)."""
    ring, stale = timedelta(seconds=ring_timeout), timedelta(seconds=stale_timeout)
    return {
        CallState.RINGING: (ring, CallResult.MISSED),
        CallState.DIALING: (ring, CallResult.UNKNOWN),
        CallState.TALKING: (stale, CallResult.UNKNOWN),
        CallState.HELD: (stale, CallResult.UNKNOWN),
    }


def end_all(phone: Phone, now: datetime, result: CallResult = CallResult.UNKNOWN) -> Transition:
    return end(phone, [(call, result) for call in phone.calls], now)
