"""The bridge against the thinnest relay on its stack, in one run and under identical load.

    python bench/run.py               # the full run: under 5 minutes on 2 cores
    python bench/run.py --quick       # under a minute
    python bench/run.py --json FILE   # the numbers as JSON too

A private mosquitto on a free port; the bridge (`python -m bridge run`) and the baseline
(bench/baseline.py) each in a process of its own; the load from `python -m bridge simulate` in
another, one TCP connection per hit; an MQTT subscriber here timestamps each hit's arrival.
Each measurement runs against both servers back to back, alternating which goes first.
"""

import argparse
import contextlib
import json
import multiprocessing
import os
import random
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the tree's bridge, as its servers get

from bench.baseline import MIX_MESSAGES
from bridge.app import decode_params
from bridge.calls import CallRecord, Phone, apply
from bridge.events import RawHit, parse_hit
from bridge.mqtt import broker_answers
from bridge.profiles import profile_for
from bridge.rows import StoredDevice
from bridge.sequences import Flavour, Scenario, make_phone, play
from bridge.store import Store

STDOUT = subprocess.STDOUT
ROOT = Path(__file__).resolve().parent.parent
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
CLK_TCK = os.sysconf("SC_CLK_TCK")
STAMP = re.compile(rb'"t":"(\d+)"')
NAMES = ("baseline", "bridge")
# The relay again, publishing what the bridge publishes for a hit (`baseline.py --mix bridge`): the
# event, and on average as many more messages of the same sizes. What throughput the contract's
# messages alone leave on this stack, with no state. (Until 2026-11-27: 2 messages a hit.)
FLOOR = "relay-mix"
TARGET_PHONES, TARGET_RECORDS = 10_000, 100_000


@dataclass(frozen=True)
class Plan:
    phones: int  # phones of the throughput and latency runs
    max_seconds: float
    max_rounds: int  # the best of these counts
    latency_seconds: float
    state_step: int  # new phones per step of the state feed, each with 10 missed calls
    state_budget: float  # seconds of state feed per server, at most
    state_steps: int = 10  # steps of the state feed, at most
    rates: tuple[int, ...] = (200, 1000)
    latency_rounds: int = 1  # at the top rate: the round with each server's median p99 counts
    restored_phones: int = TARGET_PHONES  # phones of the store a second bridge starts from


PLANS = {
    "full": Plan(
        1000,
        max_seconds=6,
        max_rounds=2,
        latency_seconds=8,
        state_step=500,
        state_budget=45,
        latency_rounds=3,
    ),
    "quick": Plan(
        300,
        max_seconds=3,
        max_rounds=1,
        latency_seconds=3,
        state_step=200,
        state_budget=20,
        restored_phones=2000,
    ),
    "tiny": Plan(
        20,
        max_seconds=0.5,
        max_rounds=1,
        latency_seconds=0.4,
        state_step=10,
        state_budget=5,
        state_steps=2,
        restored_phones=50,
        latency_rounds=2,
    ),
}
CALLS_PER_PHONE = TARGET_RECORDS // TARGET_PHONES  # missed calls of each phone in the seeded store


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


# ---- processes ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Broker:
    port: int
    pid: int


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system, all threads) of a process so far."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def machine_cpu() -> tuple[float, float]:
    """CPU seconds of the whole machine so far (all CPUs): busy, and all (busy + idle + I/O wait).
    Steal, the time the host gave a CPU to another machine, counts as neither."""
    with open("/proc/stat") as stat:
        ticks = [int(n) for n in stat.readline().split()[1:8]]  # user to softirq (guest is within user)
    idle = ticks[3] + ticks[4]
    return (sum(ticks) - idle) / CLK_TCK, sum(ticks) / CLK_TCK


@contextmanager
def mosquitto(workdir: Path) -> Iterator[Broker]:
    port = free_port()
    conf = workdir / "mosquitto.conf"
    workdir.chmod(0o755)  # mosquitto, run as root, drops to its own user
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
        "max_queued_messages 0\nset_tcp_nodelay true\nmax_inflight_messages 100\n"
        "log_dest stderr\nlog_type error\n"
    )
    conf.chmod(0o644)
    proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: broker_answers("127.0.0.1", port, 0.2), 10, f"mosquitto on port {port}")
        yield Broker(port, proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@dataclass
class Server:
    name: str
    port: int
    base_topic: str
    proc: subprocess.Popen[bytes]
    log: Path
    messages_per_hit: float | None = None  # a relay's, by construction; the bridge's are counted

    def stat_cpu(self) -> float:
        """CPU seconds (user + system, all threads) so far."""
        return process_cpu(self.proc.pid)

    def cpu_wait(self) -> float:
        """Seconds its threads have spent runnable but waiting for a CPU (the kernel's schedstat):
        high when the machine is busy, which makes the latencies of that run say little."""
        waited = 0
        for task in Path(f"/proc/{self.proc.pid}/task").iterdir():
            with contextlib.suppress(OSError, IndexError, ValueError):
                waited += int((task / "schedstat").read_text().split()[1])
        return waited / 1e9

    def memory_mb(self, key: str) -> float:
        """VmRSS or VmHWM (the peak), in MB."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
        raise RuntimeError(f"no {key} for {self.name}")

    def reset_peak(self) -> bool:
        """Restarts VmHWM from the current RSS (Linux `clear_refs` 5); False when not allowed."""
        try:
            Path(f"/proc/{self.proc.pid}/clear_refs").write_text("5")
        except OSError:
            return False
        return True

    def drained(self) -> bool:
        """Whether the bridge's MQTT queue is empty (the baseline keeps none of its own)."""
        return self.name != "bridge" or self.health().get("queue_length") == 0

    def health(self) -> dict[str, object]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=5) as answer:
            data: dict[str, object] = json.load(answer)
            return data

    def published(self) -> int | None:
        """MQTT messages the server has had acknowledged (the bridge's /metrics), None when unknown."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as answer:
                text = answer.read().decode()
        except OSError:
            return None
        found = re.search(r"^amego_mqtt_messages_published_total ([0-9.e+]+)$", text, re.MULTILINE)
        return int(float(found.group(1))) if found else None

    def ready(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} exited: {self.log.read_text()[-2000:]}")
        try:
            return bool(self.health().get("mqtt_connected"))
        except OSError:
            return False

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def clean_env() -> dict[str, str]:
    """No AMEGO_* overrides from the caller's shell; the tree itself on the path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AMEGO_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    return env


def start_bridge(workdir: Path, broker: int, tag: str, prefix: Sequence[str] = ()) -> Server:
    """`prefix`: what runs the server's command (valgrind, say)."""
    port = free_port()
    config = workdir / "bridge.toml"
    config.write_text(
        f'[http]\nhost = "127.0.0.1"\nport = {port}\n'
        f'[mqtt]\nurl = "mqtt://127.0.0.1:{broker}"\nbase_topic = "bench{tag}"\nclient_id = "bench-{tag}"\n'
        f'[arp]\nenabled = false\n[storage]\ndir = "{workdir / "data"}"\n'
    )
    log = workdir / "bridge.log"
    cmd = [*prefix, sys.executable, "-m", "bridge", "run", "--config", str(config)]
    proc = subprocess.Popen(cmd, cwd=workdir, env=clean_env(), stdout=log.open("wb"), stderr=STDOUT)
    return Server("bridge", port, f"bench{tag}", proc, log)


def start_baseline(
    workdir: Path, broker: int, tag: str, mix: bool = False, prefix: Sequence[str] = ()
) -> Server:
    """The relay; with `mix`, the one that also publishes the bridge's messages (FLOOR)."""
    name, topic = (FLOOR, f"relaymix{tag}") if mix else ("baseline", f"relay{tag}")
    port = free_port()
    log = workdir / f"{name}.log"
    cmd = [
        *prefix, sys.executable, str(ROOT / "bench" / "baseline.py"), "--port", str(port),
        "--broker", f"127.0.0.1:{broker}", "--base-topic", topic, *(["--mix", "bridge"] if mix else []),
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=workdir, env=clean_env(), stdout=log.open("wb"), stderr=STDOUT)
    return Server(name, port, topic, proc, log, MIX_MESSAGES if mix else 1)


# ---- what arrives on MQTT -----------------------------------------------------------------------


class Arrivals:
    """Every published hit that carries t=<ns>: its latency from send to arrival here."""

    def __init__(self, broker: int, topics: Sequence[str]) -> None:
        self.lock = threading.Lock()
        self.latencies_ns: list[int] = []
        self.first_sent = 0
        self.last_arrival = 0
        name = f"bench-watch-{uuid.uuid4().hex[:8]}"
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=name)
        subscribed = threading.Event()

        def on_connect(client: paho.Client, *args: object) -> None:
            for topic in topics:
                client.subscribe(topic, qos=0)

        self.client.on_connect = on_connect
        self.client.on_subscribe = lambda c, u, mid, rcs, p: subscribed.set()
        self.client.on_message = self.on_message
        self.client.connect("127.0.0.1", broker)
        self.client.loop_start()
        if not subscribed.wait(10):
            raise RuntimeError("the bench's MQTT subscriber did not subscribe")

    def on_message(self, client: paho.Client, userdata: object, msg: paho.MQTTMessage) -> None:
        now = time.time_ns()
        found = STAMP.search(msg.payload)
        if found is None:
            return
        sent = int(found.group(1))
        with self.lock:
            self.latencies_ns.append(now - sent)
            self.first_sent = min(self.first_sent or sent, sent)
            self.last_arrival = now

    def reset(self) -> None:
        with self.lock:
            self.latencies_ns = []
            self.first_sent = self.last_arrival = 0

    def count(self) -> int:
        with self.lock:
            return len(self.latencies_ns)

    def settle(self, expected: int, quiet: float = 2.0, limit: float = 30.0) -> int:
        """Waits for `expected` arrivals, or for `quiet` seconds with none; how many arrived."""
        deadline = time.monotonic() + limit
        last, since = -1, time.monotonic()
        while time.monotonic() < deadline:
            n = self.count()
            if n >= expected:
                return n
            if n != last:
                last, since = n, time.monotonic()
            elif time.monotonic() - since > quiet:
                break
            time.sleep(0.05)
        return self.count()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def percentile_ms(values: Sequence[int], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] / 1e6, 2)


# ---- load ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Load:
    """One run of the simulator: its summary, and CPU seconds of the server and of the simulator."""

    hits: int
    statuses: dict[str, int]
    seconds: float
    late: int
    results: dict[str, int]
    server_cpu: float
    server_wait: float  # seconds runnable but not running (`Server.cpu_wait`)
    load_cpu: float

    @property
    def ok(self) -> int:
        return self.statuses.get("200", 0)


def drive(server: Server, workdir: Path, *args: str) -> Load:
    """One run of the simulator against a server, in a process of its own."""
    cmd = [sys.executable, "-m", "bridge", "simulate", "--server", f"127.0.0.1:{server.port}", "--json"]
    if "--duration" in args:  # calls cut short would stay open on the bridge into the next phase
        cmd.append("--finish")
    before_cpu, before_wait = server.stat_cpu(), server.cpu_wait()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run([*cmd, *args], cwd=workdir, env=clean_env(), capture_output=True, text=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    server_cpu = server.stat_cpu() - before_cpu
    server_wait = server.cpu_wait() - before_wait
    if done.returncode not in (0, 1) or not done.stdout.strip():
        raise RuntimeError(f"simulate failed ({done.returncode}): {done.stderr[-2000:]}")
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    return Load(
        hits=summary["hits"],
        statuses=summary["statuses"],
        seconds=summary["seconds"],
        late=summary["late"],
        results=summary["results"],
        server_cpu=server_cpu,
        server_wait=server_wait,
        load_cpu=(after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime),
    )


@dataclass(frozen=True)
class MachineShare:
    """Where the machine's CPU went during a timed load, in µs per hit answered 200, from the
    simulator's start to the last arrival here. Flat out on a small machine, the machine and not
    the server is the limit: then max hits/s follow the `total_us` of each run."""

    busy_percent: float  # of all the machine's CPUs
    total_us: float  # the whole machine, busy
    server_us: float
    broker_us: float
    load_generator_us: float  # its start included (about 0.4 s of CPU)
    watcher_us: float  # this process: the MQTT subscriber that times the arrivals
    rest_us: float  # the rest of the machine: the servers not under load, other services


@dataclass(frozen=True)
class Timed:
    """A timed load: what the simulator saw, and what reached MQTT."""

    hits_per_s: float  # answered 200
    sent_per_s: float
    statuses: dict[str, int]
    late: int
    cpu_us_per_hit: float  # the server's, per hit answered 200
    cpu_wait_percent: float  # the server's time waiting for a CPU, against its CPU time
    load_generator_cpu_percent: float
    delivered: int
    lost: int
    delivered_per_s: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    messages_per_hit: float | None  # MQTT messages published per hit answered 200
    machine: MachineShare | None = None


@dataclass(frozen=True)
class StatePoint:
    phones: int  # fed, beyond the phones of the load runs
    records: int
    known_phones: int | None  # as the bridge counts them
    rss_mb: float
    statuses: dict[str, int]
    seconds: float


@dataclass(frozen=True)
class Restored:
    """A second bridge, started on a store seeded with many phones and their calls, after each
    phone booted (sent its registration hits); the baseline after the same hits."""

    phones: int
    records: int
    known_phones: int | None  # as the bridge counts them
    rss_mb: float
    statuses: dict[str, int]
    seed_seconds: float  # building the store (the bridge only)


@dataclass
class Results:
    warm_up_seconds: float = 0.0
    join_peak_rss_mb: float | None = None  # VmHWM after the phones of the load runs joined
    peak_reset: bool = False  # whether peak_rss_mb restarted after the join (else it includes it)
    max: Timed | None = None
    at: dict[int, Timed] = field(default_factory=dict)
    rounds: dict[int, list[Timed]] = field(default_factory=dict)  # every latency round, in order
    peak_rss_mb: float | None = None
    state: list[StatePoint] = field(default_factory=list)
    rss_at_target_mb: float | None = None
    extrapolated: bool = False
    restored: Restored | None = None


@dataclass
class Bench:
    plan: Plan
    workdir: Path
    servers: dict[str, Server]
    arrivals: Arrivals
    broker: Broker
    tag: str
    results: dict[str, Results] = field(default_factory=lambda: {n: Results() for n in (*NAMES, FLOOR)})
    turn: int = 0
    seeding: "Future[tuple[int, float]] | None" = None  # phase 6's store, seeded during phase 5

    def order(self) -> list[Server]:
        """Both servers, the one that went first last time now going second."""
        self.turn += 1
        names = NAMES if self.turn % 2 else tuple(reversed(NAMES))
        return [self.servers[n] for n in names]

    def say(self, text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    def timed(self, server: Server, *args: str) -> Timed:
        """A load with t= stamps, and what reached MQTT: latencies and delivery rate."""
        self.arrivals.reset()
        published = server.published()
        before = self.cpu_now(server)
        load = drive(server, self.workdir, "--timestamps", "--seed", str(self.turn), *args)
        arrived = self.arrivals.settle(load.ok)
        after = self.cpu_now(server)
        published_after = server.published()
        if server.messages_per_hit is not None:
            messages: float | None = float(server.messages_per_hit)
        elif published is None or published_after is None or not load.ok:
            messages = None
        else:
            messages = round((published_after - published) / load.ok, 2)
        with self.arrivals.lock:
            latencies = list(self.arrivals.latencies_ns)
            span = (self.arrivals.last_arrival - self.arrivals.first_sent) / 1e9
        return Timed(
            hits_per_s=round(load.ok / load.seconds, 1),
            sent_per_s=round(load.hits / load.seconds, 1),
            statuses=load.statuses,
            late=load.late,
            cpu_us_per_hit=round(load.server_cpu / max(load.ok, 1) * 1e6, 1),
            cpu_wait_percent=round(load.server_wait / load.server_cpu * 100, 1) if load.server_cpu else 0.0,
            load_generator_cpu_percent=round(load.load_cpu / load.seconds * 100),
            delivered=arrived,
            lost=max(0, load.ok - arrived),
            delivered_per_s=round(arrived / span, 1) if span > 0 else 0.0,
            p50_ms=percentile_ms(latencies, 0.5),
            p99_ms=percentile_ms(latencies, 0.99),
            max_ms=percentile_ms(latencies, 1.0),
            messages_per_hit=messages,
            machine=self.share(before, after, load),
        )

    def cpu_now(self, server: Server) -> tuple[float, ...]:
        """CPU seconds so far: the machine's busy and all, the server's, the broker's, this process's."""
        busy, total = machine_cpu()
        return busy, total, server.stat_cpu(), process_cpu(self.broker.pid), time.process_time()

    @staticmethod
    def share(before: tuple[float, ...], after: tuple[float, ...], load: Load) -> MachineShare | None:
        busy, total, server, broker, watcher = (b - a for a, b in zip(before, after, strict=True))
        if not load.ok or not total:
            return None
        per_hit = 1e6 / load.ok
        known = server + broker + load.load_cpu + watcher
        return MachineShare(
            busy_percent=round(busy / total * 100, 1),
            total_us=round(busy * per_hit, 1),
            server_us=round(server * per_hit, 1),
            broker_us=round(broker * per_hit, 1),
            load_generator_us=round(load.load_cpu * per_hit, 1),
            watcher_us=round(watcher * per_hit, 1),
            rest_us=round(max(0.0, busy - known) * per_hit, 1),
        )

    def warm_up(self) -> None:
        """Every phone of the later runs registers once: joining is not what they measure."""
        phones = str(self.plan.phones)
        for server in self.order():
            started = time.monotonic()
            drive(
                server, self.workdir, "--phones", phones, "--rate", "0", "--concurrency", "16", "--calls", "0"
            )
            drive(server, self.workdir, "--phones", phones, "--rate", "200", "--duration", "1")
            results = self.results[server.name]
            results.warm_up_seconds = round(time.monotonic() - started, 1)
            results.join_peak_rss_mb = round(server.memory_mb("VmHWM"), 1)
            wait_until(server.drained, 60, f"the {server.name}'s MQTT queue to drain")
            results.peak_reset = server.reset_peak()
            self.say(f"  {server.name}: {phones} phones registered")

    def max_rate(self) -> None:
        phones = str(min(self.plan.phones, 50))
        for _ in range(self.plan.max_rounds):
            first, second = self.order()
            for server in (first, self.servers[FLOOR], second):
                found = self.timed(
                    server, "--phones", phones, "--rate", "0", "--duration", str(self.plan.max_seconds)
                )
                best = self.results[server.name].max
                if best is None or best.hits_per_s < found.hits_per_s:
                    self.results[server.name].max = found
                self.say(f"  {server.name}: {found.hits_per_s} hits/s, {found.statuses}")

    def latency(self, rate: int) -> None:
        """Both servers back to back, alternating which goes first; at the top rate for
        `latency_rounds` rounds, of which each server's round with its median p99 counts (one
        busy moment of the machine spoils a round, not the result; all rounds are reported)."""
        phones, seconds = str(self.plan.phones), str(self.plan.latency_seconds)
        rounds = self.plan.latency_rounds if rate == self.plan.rates[-1] else 1
        for _ in range(rounds):
            for server in self.order():
                found = self.timed(server, "--phones", phones, "--rate", str(rate), "--duration", seconds)
                self.results[server.name].rounds.setdefault(rate, []).append(found)
                self.say(f"  {server.name}: p50 {found.p50_ms} ms, p99 {found.p99_ms} ms, {found.statuses}")
        for name in NAMES:
            found_in = sorted(self.results[name].rounds[rate], key=lambda t: t.p99_ms)
            self.results[name].at[rate] = found_in[len(found_in) // 2]

    def peak(self) -> None:
        for server in self.servers.values():
            self.results[server.name].peak_rss_mb = round(server.memory_mb("VmHWM"), 1)

    def state(self) -> None:
        """New phones, 10 missed calls each (3 hits a call), in steps until the target or the time
        budget; the bridge first, then the baseline gets the same steps.

        Phase 6's store is seeded meanwhile, in a process of its own. This phase measures memory,
        which the CPU that takes does not change, and a full run then stays under 5 minutes on a
        slow day: seeding took 20 s on a quiet evening and 36 s on a busy one, one after the other
        it made the run 315 to 323 s."""
        seeder = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
        self.seeding = seeder.submit(
            timed_seed, self.restored_store, self.plan.restored_phones, FIRST_RESTORED
        )
        seeder.shutdown(wait=False)  # the worker ends once it has seeded
        bridge, baseline = self.servers["bridge"], self.servers["baseline"]
        self.feed(bridge, self.plan.state_steps, self.plan.state_budget)
        self.feed(baseline, len(self.results["bridge"].state), float("inf"))

    def feed(self, server: Server, steps: int, budget: float) -> None:
        results = self.results[server.name]
        first, records, spent = self.plan.phones, 0, 0.0
        while first - self.plan.phones < TARGET_PHONES and spent < budget and len(results.state) < steps:
            step = min(self.plan.state_step, TARGET_PHONES - (first - self.plan.phones))
            started = time.monotonic()
            load = drive(
                server, self.workdir, "--phones", str(step), "--first-phone", str(first),
                "--scenarios", "incoming_missed", "--calls", str(10 * step), "--rate", "0",
                "--concurrency", "32",
            )  # fmt: skip
            wait_until(server.drained, 60, f"the {server.name}'s MQTT queue to drain")
            spent += time.monotonic() - started
            first += step
            records += load.results.get("missed", 0)
            known = server.health().get("devices") if server.name == "bridge" else None
            point = StatePoint(
                phones=first - self.plan.phones,
                records=records,
                known_phones=known if isinstance(known, int) else None,
                rss_mb=round(server.memory_mb("VmRSS"), 1),
                statuses=load.statuses,
                seconds=round(spent, 1),
            )
            results.state.append(point)
            self.say(f"  {server.name}: {point}")
        results.rss_at_target_mb, results.extrapolated = extrapolate(results.state)

    @property
    def restored_store(self) -> Path:
        """Where phase 6's store is seeded: the storage dir `start_bridge` gives a bridge in
        `workdir / "restored"`."""
        return self.workdir / "restored" / "data"

    def restored(self) -> None:
        """A bridge started on a store with `restored_phones` phones and 10 missed calls each,
        then every phone boots (its registration hits: each phone is active in this process); its
        RSS after that. The baseline gets the same hits."""
        phones, first = self.plan.restored_phones, FIRST_RESTORED
        directory = self.restored_store.parent
        if self.seeding is None:  # phase 5 did not run
            records, seed_seconds = timed_seed(self.restored_store, phones, first)
        else:
            records, seed_seconds = self.seeding.result()
        self.say(f"  seeded {phones:,} phones, {records:,} records in {seed_seconds} s")
        bridge = start_bridge(directory, self.broker.port, self.tag + "r")
        try:
            wait_until(bridge.ready, 120, "the restored bridge to listen and connect to MQTT")
            for server in (bridge, self.servers["baseline"]):
                load = drive(
                    server, directory, "--phones", str(phones), "--first-phone", str(first),
                    "--calls", "0", "--rate", "0", "--concurrency", "32",
                )  # fmt: skip
                wait_until(server.drained, 120, f"the {server.name}'s MQTT queue to drain")
                known = server.health().get("devices") if server is bridge else None
                found = Restored(
                    phones=phones,
                    records=records,
                    known_phones=known if isinstance(known, int) else None,
                    rss_mb=round(server.memory_mb("VmRSS"), 1),
                    statuses=load.statuses,
                    seed_seconds=seed_seconds if server is bridge else 0.0,
                )
                self.results[server.name].restored = found
                self.say(f"  {server.name}: {found}")
        finally:
            bridge.stop()


# Phones of the seeded store: numbers of their own, so that their MACs are new to the other runs.
FIRST_RESTORED = 500_000


def timed_seed(directory: Path, phones: int, first: int) -> tuple[int, float]:
    """`seed` with CALLS_PER_PHONE, and the seconds it took."""
    started = time.monotonic()
    records = seed(directory, phones, first, CALLS_PER_PHONE)
    return records, round(time.monotonic() - started, 1)


def seed(directory: Path, phones: int, first: int, calls: int) -> int:
    """The store a bridge keeps after `phones` simulated phones had `calls` missed calls each:
    the simulator's own hits, read by the bridge's own parser and state machine and stored by its
    store, without HTTP or MQTT (feeding them over HTTP would take minutes). The records stored."""
    store = Store(directory)
    now, step, stored = datetime(2026, 1, 1, tzinfo=UTC), timedelta(seconds=7), 0
    try:
        for index in range(first, first + phones):
            sim = make_phone(index, Flavour.MIXED)
            rng = random.Random(index)
            phone = Phone(device=sim.mac, phone_type=sim.phone_type)
            ended: list[CallRecord] = []
            first_seen = now
            for _ in range(calls):
                for target in play(sim, Scenario.INCOMING_MISSED, rng):
                    path, _, query = target.partition("?")
                    _, event_name, type_name = path.split("/")
                    event = parse_hit(
                        event_name, type_name, decode_params(query.encode()),
                        profile=profile_for(type_name), source=sim.ip, raw=RawHit("GET", path, query),
                    )  # fmt: skip
                    transition = apply(phone, event, now)
                    phone, now = transition.phone, now + step
                    ended += transition.ended
            device = StoredDevice(sim.mac, sim.mac, "", True, first_seen, True, now, phone)
            store.save(device, ended)
            stored += len(ended)
    finally:
        store.close()
    return stored


def extrapolate(points: Sequence[StatePoint]) -> tuple[float | None, bool]:
    """RSS at the target; when the feed stopped short, along the least-squares line of its steps."""
    if not points:
        return None, False
    last = points[-1]
    if last.phones >= TARGET_PHONES:
        return last.rss_mb, False
    if len(points) < 2 or last.phones < TARGET_PHONES // 20:
        return None, True  # too far to reach by a straight line
    xs, ys = [p.phones for p in points], [p.rss_mb for p in points]
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    spread = sum((x - mean_x) ** 2 for x in xs)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / spread if spread else 0.0
    return round(mean_y + slope * (TARGET_PHONES - mean_x), 1), True


# ---- the table ----------------------------------------------------------------------------------

Row = tuple[str, Callable[[Results], float | None]]


def rows(plan: Plan, fed: StatePoint | None) -> list[Row]:
    def at(rate: int, metric: str) -> Callable[[Results], float | None]:
        return lambda r: getattr(r.at[rate], metric) if rate in r.at else None

    def flat_out(metric: str) -> Callable[[Results], float | None]:
        return lambda r: getattr(r.max, metric) if r.max else None

    def machine(metric: str) -> Callable[[Results], float | None]:
        return lambda r: getattr(r.max.machine, metric) if r.max and r.max.machine else None

    out: list[Row] = [
        ("max hits/s, new connection per hit (HTTP 200)", flat_out("hits_per_s")),
        ("  carried to MQTT, per second (first sent to last arrived)", flat_out("delivered_per_s")),
        ("  hit-to-MQTT latency p50 flat out (ms)", flat_out("p50_ms")),
        ("  hit-to-MQTT latency p99 flat out (ms)", flat_out("p99_ms")),
    ]
    for rate in plan.rates:
        out += [
            (f"hit-to-MQTT latency p50 at {rate} hits/s (ms)", at(rate, "p50_ms")),
            (f"hit-to-MQTT latency p99 at {rate} hits/s (ms)", at(rate, "p99_ms")),
            (f"  hits/s answered 200 (of {rate})", at(rate, "hits_per_s")),
        ]
    top = plan.rates[-1]
    out += [
        (f"MQTT messages per hit at {top} hits/s", at(top, "messages_per_hit")),
        (f"CPU per hit at {top} hits/s (µs)", at(top, "cpu_us_per_hit")),
        (f"  waiting for a CPU at {top} hits/s (% of CPU time)", at(top, "cpu_wait_percent")),
        ("CPU per hit flat out (µs)", flat_out("cpu_us_per_hit")),
        ("the machine flat out: its CPUs busy (%)", machine("busy_percent")),
        ("  its CPU per hit, all processes (µs)", machine("total_us")),
        ("    the server's", machine("server_us")),
        ("    the broker's", machine("broker_us")),
        ("    the load generator's", machine("load_generator_us")),
        ("    the bench's MQTT subscriber's", machine("watcher_us")),
        ("    the rest of the machine's", machine("rest_us")),
        (f"peak RSS while {plan.phones:,} phones join (MB)", lambda r: r.join_peak_rss_mb),
        ("peak RSS under load, after that (MB)", lambda r: r.peak_rss_mb),
    ]
    if fed is not None:
        out.append(
            (f"RSS after feeding {fed.phones:,} phones / {fed.records:,} records (MB)",
             lambda r: r.state[-1].rss_mb if r.state else None)
        )  # fmt: skip
        label = f"RSS, {TARGET_PHONES:,} phones / {TARGET_RECORDS:,} records (MB)"
        out.append((label, lambda r: r.rss_at_target_mb))
    restored = plan.restored_phones
    label = f"RSS, {restored:,} phones / {restored * CALLS_PER_PHONE:,} records restored (MB)"
    out.append((label, lambda r: r.restored.rss_mb if r.restored else None))
    return out


def table(results: dict[str, Results], plan: Plan) -> list[tuple[str, float | None, float | None]]:
    bridge = results["bridge"]
    fed = bridge.state[-1] if bridge.state else None
    out = [(label, value(results["baseline"]), value(bridge)) for label, value in rows(plan, fed)]
    floor, mine = results[FLOOR].max, bridge.max
    if floor is not None and mine is not None:  # after the baseline's flat-out rows
        after = next(i for i, (label, *_) in enumerate(out) if label.startswith("hit-to-MQTT latency p50 at"))
        out[after:after] = [
            ("the same against the relay with the bridge's messages", floor.hits_per_s, mine.hits_per_s),
            ("  carried to MQTT, per second", floor.delivered_per_s, mine.delivered_per_s),
            ("  hit-to-MQTT latency p50 flat out (ms)", floor.p50_ms, mine.p50_ms),
        ]
    return out


def render(results: dict[str, Results], plan: Plan) -> str:
    lines = [f"{'':56} {'baseline':>10} {'bridge':>10} {'bridge/baseline':>16}"]
    for label, base, bridge in table(results, plan):
        ratio = f"{bridge / base:.2f}" if base and bridge is not None else "-"
        lines.append(f"{label:56} {fmt(base):>10} {fmt(bridge):>10} {ratio:>16}")
    for rate in plan.rates:
        each = {name: [t.p99_ms for t in results[name].rounds.get(rate, [])] for name in NAMES}
        if len(each["bridge"]) > 1:
            pairs = zip(each["baseline"], each["bridge"], strict=True)
            ratios = ", ".join(f"{b / a:.2f}" if a else "-" for a, b in pairs)
            lines.append(
                f"(p99 at {rate} hits/s in each round, ms: baseline {', '.join(map(fmt, each['baseline']))}; "
                f"bridge {', '.join(map(fmt, each['bridge']))}; bridge/baseline {ratios}. The rows at "
                f"{rate} hits/s are each server's round with its median p99)"
            )
    shares = [found.machine if found else None for found in (results[name].max for name in NAMES)]
    if shares[0] is not None and shares[1] is not None and shares[1].total_us:
        relay_us, bridge_us = shares[0].total_us, shares[1].total_us
        lines.append(
            f"(flat out, where the machine is near full, max hits/s follow its CPU per hit: "
            f"{fmt(relay_us)} µs against {fmt(bridge_us)}, which alone would give the bridge "
            f"{relay_us / bridge_us:.2f}x the baseline's hits/s)"
        )
    if not results["bridge"].peak_reset:
        lines.append("(peak RSS under load includes the join: /proc/<pid>/clear_refs was not writable)")
    if results["bridge"].extrapolated and results["bridge"].rss_at_target_mb is None:
        lines.append(f"({TARGET_PHONES:,} phones: too few fed to extrapolate; the full run feeds more)")
    elif results["bridge"].extrapolated:
        lines.append(
            f"({TARGET_PHONES:,} phones: extrapolated along the least-squares line of the feed's "
            "steps, which stopped at their time budget)"
        )
    return "\n".join(lines)


def fmt(value: float | None) -> str:
    if value is None or value != value:
        return "-"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.1f}"


# ---- main ---------------------------------------------------------------------------------------


def run(plan: Plan, say: Callable[[str], None]) -> dict[str, Results]:
    started = time.monotonic()
    tag = uuid.uuid4().hex[:8]
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="amego-bench-")))
        broker = stack.enter_context(mosquitto(workdir))
        servers = {
            "baseline": start_baseline(workdir, broker.port, tag),
            "bridge": start_bridge(workdir, broker.port, tag),
            FLOOR: start_baseline(workdir, broker.port, tag, mix=True),
        }
        for server in servers.values():
            stack.callback(server.stop)
        for server in servers.values():
            wait_until(server.ready, 30, f"the {server.name} to listen and connect to MQTT")
        arrivals = Arrivals(
            broker.port,
            [
                f"bench{tag}/+/event",
                *(f"{s.base_topic}/event" for s in servers.values() if s.name != "bridge"),
            ],
        )
        stack.callback(arrivals.close)
        bench = Bench(plan, workdir, servers, arrivals, broker, tag)
        steps: list[tuple[str, Callable[[], None]]] = [
            ("warm-up", bench.warm_up),
            ("max throughput", bench.max_rate),
            *[(f"latency at {r} hits/s", lambda r=r: bench.latency(r)) for r in plan.rates],
            ("peak RSS", bench.peak),
            ("RSS with many phones and call records", bench.state),
            (f"RSS with {plan.restored_phones:,} phones restored from a store", bench.restored),
        ]
        for label, step in steps:
            say(f"{label} ({time.monotonic() - started:.0f} s)")
            step()
        return bench.results


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="The bridge against a bare Starlette+uvicorn+paho relay.")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="a short run (under a minute)")
    mode.add_argument("--tiny", action="store_true", help="a few hundred hits: does the machinery work")
    p.add_argument("--json", metavar="FILE", help="write all numbers as JSON to FILE")
    args = p.parse_args(argv)
    name = "tiny" if args.tiny else "quick" if args.quick else "full"
    plan = PLANS[name]
    if not Path(MOSQUITTO).exists():
        print("bench: mosquitto is not installed (apt-get install mosquitto)", file=sys.stderr)
        return 2
    started = time.monotonic()
    results = run(plan, lambda text: print(text, file=sys.stderr, flush=True))
    elapsed = time.monotonic() - started
    print(f"amego-bridge bench: {name} run, {os.cpu_count()} CPUs, {elapsed:.0f} s")
    print(render(results, plan))
    if args.json:
        report = {
            "mode": name,
            "plan": asdict(plan),
            "seconds": round(elapsed, 1),
            "cpus": os.cpu_count(),
            "table": table(results, plan),
            "results": {n: asdict(r) for n, r in results.items()},
        }
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
