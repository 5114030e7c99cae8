"""Polling known phones, and reconciling the bridge's state with what they answer.

A poll asks a phone for its status where its phone type has a status request (Yealink
`phonecfg=get`, Grandstream `api-get_line_status` and `api-get_accounts`), else only whether its
web server answers at all. `reconcile` is pure: it corrects lines and DND, and ends calls the
phone no longer has. `Availability` turns poll results into online/offline without flapping.
`Poller` runs the rounds; the service applies the results on the event loop.
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Protocol

from bridge import payloads, phone
from bridge.calls import Call, CallRecord, CallResult, CallState, Direction, LineState, Phone, Transition, end
from bridge.commands import HttpRequest, render
from bridge.config import Config
from bridge.phone import Target
from bridge.phone_commands import REACHABILITY, CommandSet, StatusReply, StatusRequest
from bridge.phone_status import Lines, PhoneStatus, UnreadableStatus, read_status
from bridge.profiles import Profile

log = logging.getLogger(__name__)

# A poll's answer may predate news from the phone's hits: calls with news this recent are kept.
SETTLE = timedelta(seconds=10)


@dataclass(frozen=True, slots=True)
class PollTarget:
    """One phone to poll: where it is, how to log in, and what its phone type can be asked."""

    device: str
    phone_type: str
    target: Target  # holds the credentials; its repr does not show the password
    commands: CommandSet


@dataclass(frozen=True, slots=True)
class PollResult:
    device: str
    reachable: bool  # any HTTP answer, even a 401; a refused connection or a timeout is not
    http_status: int | None = None  # of the first request
    reason: str | None = None  # why the phone, or its status, could not be read; never a secret
    lines: Lines | None = None  # None: the phone told nothing about its lines
    call_active: bool | None = None
    dnd: bool | None = None


def poll_target(config: Config, profiles: Mapping[str, Profile], state: Phone) -> PollTarget | None:
    """The phone with its address and login; None when its address is not known."""
    reached = phone.reach(config, profiles, state)
    if reached.target is None:
        return None
    return PollTarget(state.device, reached.phone_type, reached.target, reached.commands)


class Round(Protocol):
    """The phones of a poll round: how many, and their targets in turn (a list will do)."""

    def __len__(self) -> int: ...

    def __iter__(self) -> Iterator[PollTarget]: ...


@dataclass(frozen=True)
class Turns:
    """A round's phones by id, each one's target worked out only when its turn comes, from the
    phone as it is then. Worked out all at once when a round started, 1,000 phones' targets held
    every hit up for 24 ms, once a minute."""

    ids: Sequence[str]
    target: Callable[[str], PollTarget | None]  # None: gone since, or no address known

    def __len__(self) -> int:
        return len(self.ids)

    def __iter__(self) -> Iterator[PollTarget]:
        for device_id in self.ids:
            found = self.target(device_id)
            if found is not None:
                yield found


def status_request(status: StatusRequest, target: Target) -> HttpRequest | None:
    """The request, or None when it needs a credential the device has not got."""
    values = {k: v for k, v in (("username", target.username), ("password", target.password)) if v}
    if not status.request.variables <= values.keys():
        return None
    return render(status.request, values)


async def poll_phone(polled: PollTarget) -> PollResult:
    """Ask one phone for its status (or only whether it answers); never raises for the phone's sake."""
    target, commands, device = polled.target, polled.commands, polled.device
    requests: list[tuple[StatusReply, HttpRequest]] = []
    for status in commands.status:
        if (request := status_request(status, target)) is not None:
            requests.append((status.reply, request))
    if not requests:
        outcome = await phone.send(target, render(REACHABILITY, {}), commands)
        if outcome.http_status is None:
            return PollResult(device, False, None, outcome.error)
        reason = "status not read: it needs [devices.<id>] password" if commands.status else None
        return PollResult(device, True, outcome.http_status, reason)
    found = PhoneStatus()
    first_status: int | None = None
    problems: list[str] = []
    for kind, request in requests:
        outcome = await phone.send(target, request, commands)
        if outcome.http_status is None and first_status is None:
            return PollResult(device, False, None, outcome.error)
        first_status = first_status or outcome.http_status
        if not outcome.ok:
            problems.append(f"{request.path}: {outcome.error}")
            continue
        try:
            found = found.merge(read_status(kind, outcome.body))
        except UnreadableStatus as err:
            problems.append(f"{request.path}: status reply not understood: {err}")
    reason = "; ".join(problems) or None
    return PollResult(device, True, first_status, reason, found.lines, found.call_active, found.dnd)


# ---- reconciling --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reconciled:
    phone: Phone  # the same object as given when nothing changed
    ended: tuple[CallRecord, ...] = ()
    lines: Lines = ()  # lines whose state changed, with their new state
    dnd: bool | None = None  # the new DND, when it changed
    corrections: tuple[str, ...] = ()  # what the phone had failed to report, one sentence each

    @property
    def transition(self) -> Transition:
        return Transition(self.phone, self.ended)


def on_off(value: bool) -> str:
    return "on" if value else "off"


def stale_result(call: Call) -> CallResult:
    if call.state is CallState.RINGING and call.direction is Direction.INCOMING:
        return CallResult.MISSED
    return CallResult.UNKNOWN


def reconcile(phone: Phone, result: PollResult, now: datetime, settle: timedelta = SETTLE) -> Reconciled:
    """The phone's state corrected by a poll. Learning a value the bridge did not know yet is no
    correction; contradicting one it knew is. Calls with news within `settle` are kept."""
    if not result.reachable:
        return Reconciled(phone)
    corrections = []
    lines = dict(phone.lines)
    changed: list[tuple[str, LineState]] = []
    for line, state in result.lines or ():
        old = lines.get(line)
        if old is state:
            continue
        lines[line] = state
        changed.append((line, state))
        if old is not None:
            corrections.append(f"line {line}: {old} -> {state}")
    dnd = result.dnd if result.dnd is not None and result.dnd != phone.dnd else None
    if dnd is not None and phone.dnd is not None:
        corrections.append(f"dnd: {on_off(phone.dnd)} -> {on_off(dnd)}")
    endings = []
    if result.call_active is False:
        endings = [(call, stale_result(call)) for call in phone.calls if now - call.updated >= settle]
    if not (changed or dnd is not None or endings):
        return Reconciled(phone)
    corrected = replace(phone, lines=tuple(sorted(lines.items())), dnd=phone.dnd if dnd is None else dnd)
    step = end(corrected, endings, now)
    corrections += [f"call {call.key} ended: the phone reports no active call" for call, _ in endings]
    return Reconciled(step.phone, step.ended, tuple(changed), dnd, tuple(corrections))


def resync_payload(
    device: str, phone_type: str, corrections: Sequence[str], time: datetime, mac_resolved: bool = True
) -> payloads.Json:
    """A `resync` event on `<base>/<id>/event`: the fields of every event, corrections in `extra`."""
    return {
        "event_type": "resync",
        "time": payloads.iso(time),
        "device": device,
        "phone_type": phone_type,
        "mac_resolved": mac_resolved,
        "number": None,
        "name": None,
        "line": None,
        "call_id": None,
        "raw": None,
        "extra": {"corrections": list(corrections)},
    }


# ---- availability and rounds --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Availability:
    """Online after a successful poll; offline after `failures_to_offline` failed ones in a row."""

    online: bool | None = None  # None: not polled yet
    failures: int = 0
    failures_to_offline: int = 2

    def after(self, reachable: bool) -> "Availability":
        if reachable:
            return replace(self, online=True, failures=0)
        failures = self.failures + 1
        offline = failures >= self.failures_to_offline
        return replace(self, failures=failures, online=False if offline else self.online)


Poll = Callable[[PollTarget], Awaitable[PollResult]]
Sleep = Callable[[float], Awaitable[None]]


SPREAD = 0.8  # of the interval, over which a round's polls start


class Poller:
    """Polls the phones `devices()` returns every `interval` seconds (0: never), `concurrency` at
    a time; a round starts only when the last one has ended. `on_result` runs on the event loop."""

    def __init__(
        self,
        interval: float,
        devices: Callable[[], Round],
        on_result: Callable[[PollResult], None],
        concurrency: int = 8,
        poll: Poll = poll_phone,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.interval = interval
        self.devices = devices
        self.on_result = on_result
        self.concurrency = concurrency
        self.poll = poll
        self.sleep = sleep
        self.lock = asyncio.Lock()

    async def run(self) -> None:
        """Poll round after round until cancelled; returns at once when polling is off."""
        if self.interval <= 0:
            return
        loop = asyncio.get_running_loop()
        while True:
            began = loop.time()
            try:
                await self.poll_round(spread_over=self.interval * SPREAD)
            except Exception:
                log.exception("a poll round failed")
            await self.sleep(max(0.0, self.interval - (loop.time() - began)))

    async def poll_round(self, spread_over: float = 0.0) -> int:
        """Poll every phone once; the number polled. A call during a round waits for its end.

        With `spread_over` (seconds) the polls start evenly across that time rather than all at
        once, so a thousand phones cost a steady trickle, not a burst that delays hits."""
        async with self.lock:
            targets = self.devices()  # each target is worked out as its turn comes (`Turns`)
            gate = asyncio.Semaphore(self.concurrency)
            spacing = spread_over / len(targets) if len(targets) else 0.0
            polled = 0
            async with asyncio.TaskGroup() as group:
                for target in targets:
                    group.create_task(self.poll_one(target, gate))
                    polled += 1
                    if spacing:
                        await asyncio.sleep(spacing)
            return polled

    async def poll_one(self, target: PollTarget, gate: asyncio.Semaphore) -> None:
        async with gate:
            try:
                result = await self.poll(target)
            except Exception:
                log.exception("polling %s failed", target.device)
                return
        try:
            self.on_result(result)
        except Exception:
            log.exception("the poll result of %s could not be applied", target.device)
