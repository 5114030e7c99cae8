"""Polling phones: reachability and status from stand-in phones (real HTTP servers), the pure
reconciliation of the bridge's state with it, availability without flapping, and the rounds."""

import asyncio
import contextlib
import json
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta

import pytest

from bridge.calls import Call, CallResult, CallState, Direction, LineState, Phone
from bridge.config import parse_config
from bridge.payloads import encode
from bridge.phone import Target
from bridge.phone_commands import NO_COMMANDS, StatusReply
from bridge.phone_status import PhoneStatus, UnreadableStatus, read_status
from bridge.poll import (
    Availability,
    Poller,
    PollResult,
    PollTarget,
    Turns,
    poll_phone,
    poll_target,
    reconcile,
    resync_payload,
)
from bridge.profiles import BUILTIN_PROFILES
from tests.conftest import free_port
from tests.phone_standin import StandIn

YEALINK = "001565aabbcc"
GRANDSTREAM = "000b82aabbcc"
PASSWORD = "s3cret-phone"
T0 = datetime(2026, 11, 26, 8, 40, tzinfo=UTC)
REGISTERED, UNREGISTERED, FAILED = LineState.REGISTERED, LineState.UNREGISTERED, LineState.FAILED


def targets(devices: Mapping[str, Mapping[str, object]], timeout: float = 2.0) -> dict[str, PollTarget]:
    """Poll targets as the service makes them: from [devices], with the logins commands use."""
    config, _ = parse_config({"devices": devices, "control": {"timeout": timeout}}, {})
    known = [Phone(dc.id, dc.phone_type or "generic", ip=dc.ip or None) for dc in config.devices.phones]
    found = (poll_target(config, BUILTIN_PROFILES, state) for state in known)
    return {t.device: t for t in found if t is not None}


def poll(target: PollTarget) -> PollResult:
    return asyncio.run(poll_phone(target))


async def until(condition: Callable[[], bool], within: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {within} s")
        await asyncio.sleep(0.005)


def call(key: str, state: CallState, direction: Direction | None, age: float = 60.0) -> Call:
    began = T0 - timedelta(seconds=age)
    answered = began if state in (CallState.TALKING, CallState.HELD) else None
    return Call(key, state, direction, "5551234", None, "100", f"id-{key}", began, answered, began)


# ---- stand-in phones ----------------------------------------------------------------------------


def test_a_phone_that_answers_is_online_even_when_it_asks_for_a_login(
    phones: Callable[..., StandIn],
) -> None:
    standin = phones(auth="basic", password="not-what-the-bridge-has")
    target = targets({"lobby": {"ip": standin.address}})["lobby"]
    result = poll(target)
    assert (result.reachable, result.http_status, result.reason) == (True, 401, None)
    assert [s.target for s in standin.requests()][:1] == ["/"]
    assert Availability().after(result.reachable).online is True


@pytest.mark.parametrize("failure", ["down", "refused", "hangs"])
def test_a_phone_that_stops_answering_goes_offline_after_two_failed_polls_and_comes_back(
    phones: Callable[..., StandIn], failure: str
) -> None:
    standin = phones()
    target = targets({"lobby": {"ip": standin.address}}, timeout=0.3)["lobby"]
    gone = target
    if failure == "refused":
        gone = PollTarget("lobby", "generic", Target(f"127.0.0.1:{free_port()}", timeout=0.3), NO_COMMANDS)
    seen: list[tuple[bool, bool | None]] = []
    availability = Availability()

    def apply(result: PollResult) -> None:
        nonlocal availability
        availability = availability.after(result.reachable)
        seen.append((result.reachable, availability.online))

    async def rounds() -> None:
        current = [target]
        poller = Poller(60, lambda: current, apply)
        await poller.poll_round()
        standin.down, standin.hold = failure == "down", failure == "hangs"
        current = [gone]
        await poller.poll_round()
        await poller.poll_round()
        standin.down, current = False, [target]
        standin.release.set()
        await poller.poll_round()

    asyncio.run(rounds())
    assert seen == [(True, True), (False, True), (False, False), (True, True)]


@pytest.mark.parametrize(
    ("failure", "reason"),
    [
        ("down", "failed"),
        ("refused", "phone unreachable at 127.0.0.1:"),
        ("hangs", "timeout: the phone at 127.0.0.1:"),
    ],
)
def test_an_unreachable_phone_gets_a_reason(
    phones: Callable[..., StandIn], failure: str, reason: str
) -> None:
    standin = phones(down=failure == "down", hold=failure == "hangs")
    address = f"127.0.0.1:{free_port()}" if failure == "refused" else standin.address
    result = poll(targets({"lobby": {"ip": address}}, timeout=0.3)["lobby"])
    assert (result.reachable, result.http_status) == (False, None)
    assert result.reason is not None
    assert reason in result.reason


YEALINK_REPLIES = {
    "key=value lines": (
        "account.1.user_name=100\naccount.1.status=registered\n"
        "account.2.user_name=200\naccount.2.status=failed\nfeatures.dnd.enable=1\n"
        "account.1.password=must-not-leak\n"
    ),
    "JSON": json.dumps(
        {
            "accounts": [
                {"id": 1, "user_name": "100", "status": "Registered"},
                {"id": 2, "user_name": "200", "status": "register_failed"},
                {"id": 3, "user_name": "300", "status": "registered", "enable": 0},
            ],
            "dnd": {"enable": True},
        }
    ),
}


@pytest.mark.parametrize("reply", YEALINK_REPLIES.values(), ids=YEALINK_REPLIES.keys())
def test_a_yealink_status_reply_corrects_lines_and_dnd(phones: Callable[..., StandIn], reply: str) -> None:
    standin = phones(auth="digest", password=PASSWORD, replies={"/servlet": reply})
    devices = {
        YEALINK: {"phone_type": "yealink", "ip": standin.address, "username": "admin", "password": PASSWORD}
    }
    result = poll(targets(devices)[YEALINK])
    assert standin.accepted()[0].target == "/servlet?phonecfg=get&accounts=1&dnd=1"
    assert (result.reachable, result.http_status, result.reason) == (True, 200, None)
    assert result.lines == (("100", REGISTERED), ("200", FAILED))
    assert (result.dnd, result.call_active) == (True, None)

    talking = call("c1", CallState.TALKING, Direction.INCOMING)
    state = Phone(YEALINK, "yealink", dnd=False, lines=(("100", UNREGISTERED),), calls=(talking,))
    fixed = reconcile(state, result, T0)
    assert fixed.corrections == ("line 100: unregistered -> registered", "dnd: off -> on")
    assert fixed.phone.lines == (("100", REGISTERED), ("200", FAILED))  # 200 learned, not corrected
    assert fixed.phone.dnd is True
    assert fixed.phone.calls == (talking,)
    assert fixed.ended == ()


def test_a_yealink_reply_that_says_idle_ends_a_stale_call(phones: Callable[..., StandIn]) -> None:
    standin = phones(replies={"/servlet": "account.1.user_name=100\naccount.1.status=1\ncall_state=idle\n"})
    devices = {YEALINK: {"phone_type": "yealink", "ip": standin.address}}
    result = poll(targets(devices)[YEALINK])
    assert standin.requests()[0].authorization is not None  # the factory login, admin/admin
    assert (result.lines, result.call_active) == ((("100", REGISTERED),), False)
    fixed = reconcile(Phone(YEALINK, "yealink", calls=(call("c3", CallState.TALKING, None),)), result, T0)
    assert [r.result for r in fixed.ended] == [CallResult.UNKNOWN]
    assert fixed.corrections == ("call c3 ended: the phone reports no active call",)


GRANDSTREAM_LINES = {
    "response": "success",
    "body": [
        {"line": 1, "state": "idle", "acct": 0, "active": 0},
        {"line": 2, "state": "idle", "acct": 1, "active": 0},
    ],
}
GRANDSTREAM_ACCOUNTS = {
    "response": "success",
    "body": [
        {"id": "1", "sip_server": "pbx.lan", "sip_id": "100", "name": "Front desk", "reg": 1},
        {"id": "2", "sip_server": "", "sip_id": "", "name": "", "reg": 0},
    ],
}


def test_a_grandstream_status_reply_ends_stale_calls_and_corrects_lines(
    phones: Callable[..., StandIn],
) -> None:
    password = "p@ss&x=1"
    standin = phones(
        replies={
            "/cgi-bin/api-get_line_status": json.dumps(GRANDSTREAM_LINES),
            "/cgi-bin/api-get_accounts": json.dumps(GRANDSTREAM_ACCOUNTS),
        }
    )
    devices = {GRANDSTREAM: {"phone_type": "grandstream", "ip": standin.address, "password": password}}
    result = poll(targets(devices)[GRANDSTREAM])
    assert [s.target for s in standin.requests()] == [
        "/cgi-bin/api-get_line_status?passcode=p%40ss%26x%3D1",
        "/cgi-bin/api-get_accounts?passcode=p%40ss%26x%3D1",
    ]
    assert [s.authorization for s in standin.requests()] == [None, None]  # the passcode is the login
    assert (result.reachable, result.reason, result.call_active) == (True, None, False)
    assert result.lines == (("100", REGISTERED),)  # account 2 is not set up: no line

    ringing = call("c1", CallState.RINGING, Direction.INCOMING)
    talking = call("c2", CallState.TALKING, Direction.OUTGOING)
    fresh = call("c3", CallState.RINGING, Direction.INCOMING, age=2.0)  # newer than the reply, maybe
    state = Phone(GRANDSTREAM, "grandstream", lines=(("100", UNREGISTERED),), calls=(ringing, talking, fresh))
    fixed = reconcile(state, result, T0)
    assert [(r.call_id, r.result) for r in fixed.ended] == [
        ("id-c1", CallResult.MISSED),
        ("id-c2", CallResult.UNKNOWN),
    ]
    assert fixed.ended[1].talk_seconds == 60.0
    assert fixed.phone.calls == (fresh,)
    assert fixed.phone.lines == (("100", REGISTERED),)
    assert fixed.corrections == (
        "line 100: unregistered -> registered",
        "call c1 ended: the phone reports no active call",
        "call c2 ended: the phone reports no active call",
    )

    event = resync_payload(GRANDSTREAM, "grandstream", fixed.corrections, T0)
    assert event == {
        "event_type": "resync",
        "time": "2026-11-26T08:40:00.000Z",
        "device": GRANDSTREAM,
        "phone_type": "grandstream",
        "mac_resolved": True,
        "number": None,
        "name": None,
        "line": None,
        "call_id": None,
        "raw": None,
        "extra": {"corrections": list(fixed.corrections)},
    }
    assert b"p@ss" not in encode(event)


def test_a_grandstream_without_password_is_polled_for_reachability_only(
    phones: Callable[..., StandIn],
) -> None:
    standin = phones()
    result = poll(targets({GRANDSTREAM: {"phone_type": "grandstream", "ip": standin.address}})[GRANDSTREAM])
    assert [s.target for s in standin.requests()] == ["/"]
    assert (result.reachable, result.lines, result.call_active) == (True, None, None)
    assert result.reason == "status not read: it needs [devices.<id>] password"


@pytest.mark.parametrize(
    ("phone_type", "settings", "http_status", "reason"),
    [
        (
            "yealink",
            {"body": "<html>Welcome</html>"},
            200,
            "/servlet: status reply not understood: no account",
        ),
        ("yealink", {"auth": "basic"}, 401, "/servlet: 401 wrong credentials"),
        ("yealink", {"status": 403}, 403, "/servlet: 403 refused by the phone; add the bridge's address"),
        (
            "grandstream",
            {"body": '{"response":"error","body":"wrong passcode"}'},
            200,
            "/cgi-bin/api-get_line_status: the phone refused the command",
        ),
    ],
)
def test_a_status_that_cannot_be_read_still_counts_as_reachable(
    phones: Callable[..., StandIn],
    phone_type: str,
    settings: dict[str, object],
    http_status: int,
    reason: str,
) -> None:
    standin = phones(**settings)
    devices = {"desk": {"phone_type": phone_type, "ip": standin.address, "password": "wrong-one"}}
    result = poll(targets(devices)["desk"])
    assert (result.reachable, result.http_status, result.lines) == (True, http_status, None)
    assert result.reason is not None
    assert result.reason.startswith(reason)
    assert "wrong-one" not in result.reason


# ---- reading status replies (pure) --------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "reply", "status"),
    [
        (StatusReply.YEALINK_PHONECFG, "features.dnd.enable=0\nfirmware=66.86.0.15", PhoneStatus(dnd=False)),
        (StatusReply.YEALINK_PHONECFG, "DNDStatus=on", PhoneStatus(dnd=True)),
        (
            StatusReply.YEALINK_PHONECFG,
            "account.1.user_name = 100\r\naccount.1.register_status = 0\r\n",
            PhoneStatus((("100", UNREGISTERED),)),
        ),
        (StatusReply.YEALINK_PHONECFG, "account.2.status=registered", PhoneStatus((("2", REGISTERED),))),
        (
            StatusReply.YEALINK_PHONECFG,
            '{"ret":"ok","data":{"account":{"1":{"sip_id":"7","reg":true}},"calls":2}}',
            PhoneStatus((("7", REGISTERED),), True),
        ),
        (
            StatusReply.GRANDSTREAM_LINE_STATUS,
            '{"response":"success","body":[{"line":1,"state":"idle"},{"line":2,"state":"connected"}]}',
            PhoneStatus(call_active=True),
        ),
        (
            StatusReply.GRANDSTREAM_LINE_STATUS,
            '{"response":"success","body":{"lines":[{"LINE":1,"STATE":"onhold"}]}}',
            PhoneStatus(call_active=True),
        ),
        (
            StatusReply.GRANDSTREAM_ACCOUNTS,
            '{"response":"success","body":[{"id":1,"sip_server":"pbx","sip_id":"","reg":"0"},'
            '{"id":2,"sip_server":"pbx","sip_id":"201","reg":"failed"}]}',
            PhoneStatus((("1", UNREGISTERED), ("201", FAILED))),
        ),
        (StatusReply.GRANDSTREAM_ACCOUNTS, '{"response":"success","body":[]}', PhoneStatus(lines=())),
    ],
)
def test_status_replies_are_read(kind: StatusReply, reply: str, status: PhoneStatus) -> None:
    assert read_status(kind, reply) == status


@pytest.mark.parametrize(
    ("kind", "reply"),
    [
        (StatusReply.YEALINK_PHONECFG, "account.1.password=hunter22\nmodel=T46S"),
        (StatusReply.YEALINK_PHONECFG, '{"account": hunter22'),
        (StatusReply.GRANDSTREAM_LINE_STATUS, "hunter22"),
        (StatusReply.GRANDSTREAM_LINE_STATUS, '{"response":"success","body":[{"line":1}]}'),
        (StatusReply.GRANDSTREAM_ACCOUNTS, '{"response":"error","body":"hunter22"}'),
        (StatusReply.GRANDSTREAM_ACCOUNTS, '{"response":"success","body":"hunter22"}'),
    ],
)
def test_unreadable_replies_say_why_without_quoting_them(kind: StatusReply, reply: str) -> None:
    with pytest.raises(UnreadableStatus) as caught:
        read_status(kind, reply)
    assert "hunter22" not in str(caught.value)


# ---- reconciling (pure) -------------------------------------------------------------------------

RINGING_IN = call("c1", CallState.RINGING, Direction.INCOMING)
DIALING = call("c2", CallState.DIALING, Direction.OUTGOING)
TALKING = call("c3", CallState.TALKING, Direction.INCOMING)
HELD = call("c4", CallState.HELD, Direction.OUTGOING)
FRESH = call("c5", CallState.TALKING, Direction.INCOMING, age=9.0)
UP = PollResult("desk", True, 200)


@pytest.mark.parametrize(
    ("phone", "result", "lines", "dnd", "calls", "ended", "corrections"),
    [
        # a phone that does not answer tells nothing
        (Phone("desk", calls=(TALKING,)), PollResult("desk", False, None, "timeout", (), False, True),
         (), None, (TALKING,), [], []),
        # reachability only: nothing to correct
        (Phone("desk", dnd=True, calls=(TALKING,)), UP, (), True, (TALKING,), [], []),
        # learned, not corrected
        (Phone("desk"), PollResult("desk", True, 200, None, (("100", REGISTERED),), None, False),
         (("100", REGISTERED),), False, (), [], []),
        # corrected
        (Phone("desk", dnd=True, lines=(("100", FAILED), ("200", REGISTERED))),
         PollResult("desk", True, 200, None, (("100", REGISTERED),), None, False),
         (("100", REGISTERED), ("200", REGISTERED)), False, (), [],
         ["line 100: failed -> registered", "dnd: on -> off"]),
        # calls the phone no longer has end; a ringing incoming one as missed
        (Phone("desk", calls=(RINGING_IN, DIALING, TALKING, HELD)),
         PollResult("desk", True, 200, None, None, False), (), None, (),
         [("c1", CallResult.MISSED), ("c2", CallResult.UNKNOWN), ("c3", CallResult.UNKNOWN),
          ("c4", CallResult.UNKNOWN)],
         [f"call c{n} ended: the phone reports no active call" for n in range(1, 5)]),
        # a call with news within the settle time may postdate the reply
        (Phone("desk", calls=(TALKING, FRESH)), PollResult("desk", True, 200, None, None, False),
         (), None, (FRESH,), [("c3", CallResult.UNKNOWN)],
         ["call c3 ended: the phone reports no active call"]),
        # a phone in a call, or silent about calls, keeps the bridge's calls
        (Phone("desk", calls=(TALKING,)), PollResult("desk", True, 200, None, None, True),
         (), None, (TALKING,), [], []),
    ],
)  # fmt: skip
def test_reconcile(
    phone: Phone,
    result: PollResult,
    lines: tuple[tuple[str, LineState], ...],
    dnd: bool | None,
    calls: tuple[Call, ...],
    ended: list[tuple[str, CallResult]],
    corrections: list[str],
) -> None:
    fixed = reconcile(phone, result, T0)
    assert fixed.phone.lines == lines
    assert fixed.phone.dnd is dnd
    assert fixed.phone.calls == calls
    assert [(f"c{r.call_id[-1]}" if r.call_id else None, r.result) for r in fixed.ended] == ended
    assert list(fixed.corrections) == corrections
    assert fixed.transition.ended == fixed.ended
    if ended:
        assert fixed.phone.last_call == fixed.ended[-1]
        assert all(r.ended == T0 for r in fixed.ended)
    if not (ended or fixed.lines or fixed.dnd is not None):
        assert fixed.phone is phone  # nothing to publish


def test_reconcile_reports_what_changed() -> None:
    phone = Phone("desk", dnd=False, lines=(("100", REGISTERED), ("200", REGISTERED)))
    result = PollResult(
        "desk", True, 200, None, (("100", REGISTERED), ("200", FAILED), ("300", REGISTERED)), None, True
    )
    fixed = reconcile(phone, result, T0)
    assert fixed.lines == (("200", FAILED), ("300", REGISTERED))
    assert fixed.dnd is True


# ---- availability --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("polls", "failures_to_offline", "states"),
    [
        ([True, False, True, False, True], 2, [True, True, True, True, True]),  # one lost poll: no flap
        ([True, False, False, False, True], 2, [True, True, False, False, True]),
        ([False, False], 2, [None, False]),  # never seen: offline once the rule says so
        ([True, False], 1, [True, False]),
        ([True, False, False, True], 3, [True, True, True, True]),
    ],
)
def test_availability(polls: list[bool], failures_to_offline: int, states: list[bool | None]) -> None:
    availability = Availability(failures_to_offline=failures_to_offline)
    seen = []
    for reachable in polls:
        availability = availability.after(reachable)
        seen.append(availability.online)
    assert seen == states


# ---- rounds --------------------------------------------------------------------------------------


def test_poll_targets_skip_phones_with_no_known_address() -> None:
    lobby = {"phone_type": "snom", "ip": "192.168.1.60", "username": "admin", "password": "s3cret-lobby"}
    config, _ = parse_config({"devices": {"lobby": lobby}}, {})
    known = [
        Phone("lobby", "snom", ip="192.168.1.60"),
        Phone(YEALINK, "yealink", ip="192.168.1.50"),  # learned from its hits
        Phone("ip-8-8-8-8", "yealink", ip="8.8.8.8"),  # outside http.allowed_networks
        Phone("quiet", "yealink"),  # no address at all
    ]
    by_id = {state.device: state for state in known}

    def target(device_id: str) -> PollTarget | None:
        state = by_id.get(device_id)
        return None if state is None else poll_target(config, BUILTIN_PROFILES, state)

    turns = Turns([*by_id, "removed"], target)
    assert len(turns) == 5  # what the round spreads its polls over
    found = list(turns)
    assert [(t.device, t.phone_type, t.target.address) for t in found] == [
        ("lobby", "snom", "192.168.1.60"),
        (YEALINK, "yealink", "192.168.1.50"),
    ]
    assert (found[1].target.username, found[1].target.password) == ("admin", "admin")  # factory login
    assert "s3cret-lobby" not in repr(found)


def test_a_round_works_out_each_target_when_its_turn_comes(phones: Callable[..., StandIn]) -> None:
    """Not all at the round's start: with 1,000 phones that held every hit up for 24 ms."""
    standin = phones()
    steps: list[str] = []

    def target(device_id: str) -> PollTarget:
        steps.append(f"target {device_id}")
        return PollTarget(device_id, "generic", Target(standin.address), NO_COMMANDS)

    async def recorded(polled: PollTarget) -> PollResult:
        steps.append(f"poll {polled.device}")
        return await poll_phone(polled)

    async def main() -> int:
        poller = Poller(60, lambda: Turns(["a", "b", "c"], target), lambda result: None, poll=recorded)
        return await poller.poll_round(spread_over=0.03)

    assert asyncio.run(main()) == 3
    assert steps == ["target a", "poll a", "target b", "poll b", "target c", "poll c"]
    assert len(standin.requests()) == 3


def test_a_round_polls_at_most_eight_phones_at_once(phones: Callable[..., StandIn]) -> None:
    standin = phones(hold=True)  # every request waits for `release`
    many = [PollTarget(f"phone{n}", "generic", Target(standin.address), NO_COMMANDS) for n in range(10)]
    results: list[PollResult] = []
    in_flight = most = 0

    async def counted(target: PollTarget) -> PollResult:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        try:
            return await poll_phone(target)
        finally:
            in_flight -= 1

    async def main() -> int:
        poller = Poller(60, lambda: many, results.append, concurrency=8, poll=counted)
        round_ = asyncio.create_task(poller.poll_round())
        await until(lambda: len(standin.requests()) >= 8)
        assert (in_flight, most) == (8, 8)  # the other two wait for a free slot
        standin.release.set()
        return await round_

    assert asyncio.run(main()) == 10
    assert most == 8
    assert sorted(r.device for r in results) == sorted(t.device for t in many)
    assert all(r.reachable for r in results)


def test_rounds_never_overlap(phones: Callable[..., StandIn]) -> None:
    slow, quick = phones(hold=True), phones()
    both = [
        PollTarget("slow", "generic", Target(slow.address), NO_COMMANDS),
        PollTarget("quick", "generic", Target(quick.address), NO_COMMANDS),
    ]
    results: list[str] = []
    waits: list[float] = []

    async def no_wait(delay: float) -> None:
        waits.append(delay)
        await asyncio.sleep(0)

    async def main() -> None:
        poller = Poller(0.001, lambda: both, lambda r: results.append(r.device), sleep=no_wait)
        running = asyncio.create_task(poller.run())
        await until(lambda: results == ["quick"] and len(slow.requests()) == 1)
        assert len(quick.requests()) == 1
        assert waits == []
        slow.release.set()
        await until(lambda: len(results) >= 6)
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running

    asyncio.run(main())
    assert [sorted(results[i : i + 2]) for i in (0, 2, 4)] == [["quick", "slow"]] * 3


def test_polling_off() -> None:
    def devices() -> list[PollTarget]:
        raise AssertionError("polled although poll.interval is 0")

    asyncio.run(Poller(0, devices, lambda result: None).run())
