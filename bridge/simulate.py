"""Simulated desk phones at a rate: scenarios played as hits, one TCP connection per hit.

A phone sends its next hit only once the last one is answered, as a phone does; the hits of all
phones are paced to one overall rate. What each hit is comes from `bridge.sequences`.
"""

import asyncio
import random
import socket
import time
from collections import Counter, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from urllib.parse import quote

from bridge.sequences import RESULTS, WEIGHTS, Flavour, Scenario, SimPhone, make_phone, play


def own_address(host: str, port: int) -> str:
    """The address this host reaches `host` from (no packet is sent)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect((host, port))
        address: str = s.getsockname()[0]
        return address


def is_loopback(host: str) -> bool:
    try:
        return IPv4Address(socket.gethostbyname(host)).is_loopback
    except (OSError, ValueError):
        return False


# ---- HTTP: one connection per hit, as phones do -------------------------------------------------


async def get(host: str, port: int, request_target: str, user_agent: str, source: str | None = None) -> str:
    """Sends one GET on a new connection (from `source`); the status code, or `refused`/`error`."""
    try:
        local = (source, 0) if source else None
        reader, writer = await asyncio.open_connection(host, port, local_addr=local)
        try:
            writer.write(
                f"GET {request_target} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: {user_agent}\r\n"
                "Accept: */*\r\nConnection: close\r\n\r\n".encode()
            )
            status_line = await reader.readline()
            await reader.read()  # to the end: the server closes first, as with a phone
        finally:
            writer.close()
    except ConnectionRefusedError:
        return "refused"
    except OSError:
        return "error"
    parts = status_line.split(b" ", 2)
    if len(parts) < 2 or not parts[1].isdigit():
        return "error"
    return parts[1].decode()


# ---- a run --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Options:
    host: str
    port: int
    phones: int = 1
    rate: float = 5.0  # hits per second from all phones together; 0: as fast as answers come
    duration: float | None = None  # seconds, after which no hit is sent (no call starts, with `finish`)
    finish: bool = False  # at the end of `duration`, calls under way are played to their end
    calls: int | None = None  # scenarios to play (boot registrations not counted)
    seed: int = 0
    flavour: Flavour = Flavour.MIXED
    scenarios: tuple[Scenario, ...] = tuple(Scenario)
    token: str = ""
    timestamps: bool = False  # add t=<ns since the epoch> to each hit, as sent
    concurrency: int | None = None  # hits in flight at most; None: one per phone
    first_phone: int = 0  # number of the first phone: another set of phones, with other MACs
    timeout: float = 10.0


@dataclass(frozen=True, slots=True)
class Summary:
    hits: int
    statuses: Mapping[str, int]
    seconds: float
    late: int  # hits sent more than 100 ms after their time: every phone was still waiting
    latency_ms: Mapping[str, float]  # of the HTTP answers: p50, p99, max
    scenarios: Mapping[str, int]
    results: Mapping[str, int]  # results of the calls played to the end, every hit answered 200
    broken: int = 0  # scenarios played to the end with a hit refused: their results are unknown

    @property
    def rate(self) -> float:
        return self.hits / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, object]:
        return {
            "hits": self.hits,
            "statuses": dict(self.statuses),
            "seconds": round(self.seconds, 3),
            "rate": round(self.rate, 1),
            "late": self.late,
            "latency_ms": dict(self.latency_ms),
            "scenarios": dict(self.scenarios),
            "results": dict(self.results),
            "broken": self.broken,
        }

    def describe(self) -> str:
        statuses = ", ".join(f"{code}: {n}" for code, n in sorted(self.statuses.items())) or "none"
        lat = self.latency_ms
        lines = [
            f"hits sent: {self.hits} in {self.seconds:.1f} s ({self.rate:.1f} hits/s)",
            f"answers: {statuses}",
            f"answer time: p50 {lat['p50']:.1f} ms, p99 {lat['p99']:.1f} ms, max {lat['max']:.1f} ms",
            "scenarios: " + (", ".join(f"{k} {v}" for k, v in sorted(self.scenarios.items())) or "none"),
            "calls played: " + (", ".join(f"{k} {v}" for k, v in sorted(self.results.items())) or "none"),
        ]
        if self.broken:
            lines.append(f"not counted: {self.broken} scenarios with a hit not answered 200")
        if self.late:
            lines.append(f"late: {self.late} hits went out over 100 ms late (all phones were busy)")
        return "\n".join(lines)


def percentile(values: Sequence[float], fraction: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


@dataclass
class PhoneRun:
    phone: SimPhone
    rng: random.Random
    plan: deque[str] = field(default_factory=deque)
    scenario: Scenario | None = None
    refused: bool = False  # a hit of the current scenario was not answered 200
    booted: bool = False


class Simulation:
    def __init__(self, options: Options) -> None:
        if options.phones < 1:
            raise ValueError("at least one phone")
        self.options = options
        # On a loopback server each phone sends from an address of its own, and reports it as
        # phones do; otherwise they all send from, and report, this host's address.
        self.own_addresses = is_loopback(options.host)
        ip = None if self.own_addresses else own_address(options.host, options.port)
        self.runs = [
            PhoneRun(make_phone(i, options.flavour, ip), random.Random(f"{options.seed}:{i}"))
            for i in range(options.first_phone, options.first_phone + options.phones)
        ]
        self.choices = list(options.scenarios)
        self.weights = [WEIGHTS[s] for s in self.choices]
        self.started = 0
        self.statuses: Counter[str] = Counter()
        self.latencies: list[float] = []
        self.scenarios: Counter[str] = Counter()
        self.results: Counter[str] = Counter()
        self.broken = 0
        self.late = 0
        self.closing = False  # past the duration with `finish`: no new scenario starts

    def next_target(self, run: PhoneRun) -> str | None:
        """The phone's next hit; a new scenario when the last is done; None when it has finished."""
        if not run.plan:
            if run.scenario is not None:
                self.finish(run)
            if self.closing:
                return None
            if not run.booted and Scenario.REGISTRATION in self.options.scenarios:
                scenario = Scenario.REGISTRATION
            else:
                if self.options.calls is not None and self.started >= self.options.calls:
                    return None
                self.started += 1
                scenario = run.rng.choices(self.choices, self.weights)[0]
            run.booted = True
            run.scenario = scenario
            run.plan.extend(play(run.phone, scenario, run.rng))
            self.scenarios[scenario.value] += 1
        request_target = run.plan.popleft()
        if self.options.token:
            request_target += f"&token={quote(self.options.token, safe='')}"
        return request_target

    def finish(self, run: PhoneRun) -> None:
        """Counts the calls of a scenario whose last hit was answered."""
        assert run.scenario is not None
        if run.refused:
            self.broken += 1
        else:
            self.results.update(RESULTS[run.scenario])
        run.scenario, run.refused = None, False

    async def hit(self, run: PhoneRun, request_target: str) -> None:
        opts = self.options
        if opts.timestamps:
            request_target += f"&t={time.time_ns()}"
        sent = time.perf_counter()
        try:
            async with asyncio.timeout(opts.timeout):
                source = run.phone.ip if self.own_addresses else None
                status = await get(opts.host, opts.port, request_target, run.phone.user_agent, source)
        except TimeoutError:
            status = "timeout"
        self.latencies.append(time.perf_counter() - sent)
        self.statuses[status] += 1
        run.refused |= status != "200"

    async def run(self) -> Summary:
        loop = asyncio.get_running_loop()
        opts = self.options
        interval = 1.0 / opts.rate if opts.rate > 0 else 0.0
        ready: deque[PhoneRun] = deque(self.runs)
        wake = asyncio.Event()
        tasks: set[asyncio.Task[None]] = set()
        busy = 0  # phones waiting for an answer
        most = opts.concurrency or len(self.runs)

        async def one(run: PhoneRun, request_target: str) -> None:
            nonlocal busy
            try:
                await self.hit(run, request_target)
            finally:
                busy -= 1
                ready.append(run)
                wake.set()

        start = loop.time()
        deadline = start + opts.duration if opts.duration is not None else float("inf")
        due = start
        while True:
            now = loop.time()
            if now >= deadline and opts.finish:
                self.closing, deadline = True, float("inf")
            if now >= deadline or (not ready and not busy):
                break
            if not ready or busy >= most:
                wake.clear()
                await wake.wait()
                continue
            if interval and due > now:
                await asyncio.sleep(min(due, deadline) - now)
                continue
            run = ready.popleft()
            request_target = self.next_target(run)
            if request_target is None:
                continue  # this phone is done
            busy += 1
            task = asyncio.create_task(one(run, request_target))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            if interval:
                due += interval
                if due < now - 0.1:
                    self.late += 1
                    due = now - 0.1
        if tasks:
            await asyncio.wait(tasks)
        for run in self.runs:  # a scenario whose last hit was answered has ended
            if run.scenario is not None and not run.plan:
                self.finish(run)
        seconds = loop.time() - start
        return Summary(
            hits=sum(self.statuses.values()),
            statuses=dict(self.statuses),
            seconds=seconds,
            late=self.late,
            latency_ms={
                "p50": round(percentile(self.latencies, 0.5) * 1000, 2),
                "p99": round(percentile(self.latencies, 0.99) * 1000, 2),
                "max": round(max(self.latencies, default=0.0) * 1000, 2),
            },
            scenarios=dict(self.scenarios),
            results=dict(self.results),
            broken=self.broken,
        )


def simulate(options: Options) -> Summary:
    """Runs the phones (on uvloop when it is there) and returns what happened."""
    try:
        import uvloop
    except ImportError:  # Windows
        return asyncio.run(Simulation(options).run())
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(Simulation(options).run())
