"""The benchmark command runs from the tree and prints its table (a tiny run; no timing asserted)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from bench.baseline import BRIDGE_EVENT_BYTES, BRIDGE_MIX, MIX_MESSAGES
from tests.conftest import Mosquitto, Watcher, accepts, free_port, unique_base, wait_until

ROOT = Path(__file__).resolve().parent.parent


def run_script(tmp_path: Path, script: str, *args: str, timeout: float) -> "subprocess.CompletedProcess[str]":
    """A bench script run as a user would, from another directory, with a bare environment; it
    must succeed."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,  # nothing depends on where it is started
        timeout=timeout,
        env={"PATH": "/usr/bin:/bin:/usr/sbin", "HOME": str(tmp_path)},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.mark.timeout(180)
def test_bench_runs_both_servers_and_prints_the_table(tmp_path: Path) -> None:
    if shutil.which("mosquitto") is None and not Path("/usr/sbin/mosquitto").exists():
        pytest.fail("mosquitto is not installed: run the README's test command (it installs it)")
    out = tmp_path / "bench.json"
    result = run_script(tmp_path, "run.py", "--tiny", "--json", str(out), timeout=170)
    lines = result.stdout.splitlines()
    assert lines[1].split() == ["baseline", "bridge", "bridge/baseline"]
    table = "\n".join(lines)
    rows = (
        "max hits/s",
        "carried to MQTT, per second",
        "latency p50 flat out",
        "against the relay with the bridge's messages",
        "latency p99 at 1000",
        "CPU per hit",
        "waiting for a CPU at 1000",
        "peak RSS",
        "10,000",
        "50 phones / 500 records restored",
        "p99 at 1000 hits/s in each round",
        "the machine flat out: its CPUs busy",
        "its CPU per hit, all processes",
        "the load generator's",
        "max hits/s follow its CPU per hit",
    )
    for row in rows:
        assert row in table
    report = json.loads(out.read_text())
    assert report["mode"] == "tiny"
    for name in ("baseline", "bridge"):
        found = report["results"][name]
        assert found["max"]["statuses"]["200"] > 0
        assert found["at"]["1000"]["delivered"] > 0  # stamped hits came through MQTT
        assert isinstance(found["at"]["1000"]["cpu_wait_percent"], float)  # read from the kernel, for each
        rounds = found["rounds"]["1000"]
        assert len(rounds) == 2  # the tiny plan's rounds at the top rate
        assert found["at"]["1000"] in rounds  # one of them counts, not a blend
        assert found["peak_rss_mb"] > 0
        machine = found["max"]["machine"]  # where the machine's CPU went flat out, read from the kernel
        assert 0 < machine["busy_percent"] <= 100
        assert machine["total_us"] >= machine["server_us"] > 0
        assert machine["broker_us"] > 0
        assert machine["load_generator_us"] > 0
        assert found["max"]["cpu_us_per_hit"] <= machine["server_us"]  # the same process, a longer span
        assert found["state"][-1]["statuses"] == {"200": found["state"][-1]["statuses"]["200"]}
    assert report["results"]["bridge"]["state"][-1]["known_phones"] >= 40  # the fed phones joined
    restored = report["results"]["bridge"]["restored"]
    assert (restored["phones"], restored["records"], restored["known_phones"]) == (50, 500, 50)
    for name in ("baseline", "bridge"):  # every restored phone booted: its registration hits, all 200
        statuses = report["results"][name]["restored"]["statuses"]
        assert list(statuses) == ["200"]
        assert statuses["200"] >= 50
    floor = report["results"]["relay-mix"]["max"]  # the relay with the bridge's messages
    assert floor["statuses"]["200"] > 0
    assert floor["messages_per_hit"] == MIX_MESSAGES
    for found in (floor, report["results"]["baseline"]["max"], report["results"]["bridge"]["max"]):
        # flat out, what each server carried to MQTT, and how late: its stamped events arrived
        assert found["delivered"] > 0
        assert found["delivered_per_s"] > 0
        assert 0 < found["p50_ms"] <= found["p99_ms"]


@pytest.mark.timeout(60)
def test_the_relay_with_the_bridges_messages_publishes_them(mosquitto: Mosquitto, tmp_path: Path) -> None:
    """`baseline.py --mix bridge`: for every 100 hits, the bridge's mix (BRIDGE_MIX) beside the hits'
    events, at the sizes given, retained where the bridge's are, each kind on each phone's topic."""
    base, port = unique_base(), free_port()
    watcher = Watcher(mosquitto.port, f"{base}/#")
    server = subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "baseline.py"), "--port", str(port), "--broker",
         f"127.0.0.1:{mosquitto.port}", "--base-topic", base, "--mix", "bridge"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_until(lambda: accepts(port), what="the relay to listen")
        phones = [f"00156500{n:04x}" for n in range(4)]
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as http:
            for hit in range(100):
                answer = http.get(f"/incoming/yealink?device={phones[hit % 4]}&local=100&remote=200")
                assert answer.status_code == 200
        expected = round(100 * MIX_MESSAGES)
        wait_until(lambda: len(watcher.messages) >= expected, what=f"{expected} messages")
        with watcher.lock:
            received = list(watcher.messages)
    finally:
        server.terminate()
        server.wait(10)
        watcher.close()
    assert len(received) == expected == 261
    events = [m for m in received if m.topic == f"{base}/event"]
    extra_events = [m for m in events if b'"params"' not in m.payload]
    assert len(events) == 100 + 22
    assert min(len(m.payload) for m in events if m not in extra_events) >= BRIDGE_EVENT_BYTES
    assert {len(m.payload) for m in extra_events} == {762}
    for name, _, every, size in BRIDGE_MIX[1:]:
        kind = [m for m in received if m.topic.rsplit("/", 1)[1] == name]
        assert len(kind) == every
        assert {len(m.payload) for m in kind} == {size}
        assert {m.topic.split("/")[-2] for m in kind} == set(phones)  # spread over every phone
    later = Watcher(mosquitto.port, f"{base}/#")  # a new subscriber gets what is retained, only that
    kept = {(phone, name) for phone in phones for name in ("call", "status", "history")}  # as the contract's
    try:
        wait_until(lambda: len(later.messages) >= len(kept), what="the retained messages")
        with later.lock:
            assert {tuple(m.topic.split("/")[-2:]) for m in later.messages} == kept
            assert all(m.retain for m in later.messages)
    finally:
        later.close()


@pytest.mark.timeout(120)
def test_mqtt_bench_measures_the_link_against_plain_paho(tmp_path: Path) -> None:
    result = run_script(tmp_path, "mqtt_bench.py", "--messages", "400", "--rounds", "1", timeout=110)
    header, *rows = result.stdout.splitlines()
    assert header.split() == ["paho", "link", "link/paho"]
    assert [row.split(",")[0] for row in rows] == ["MQTT 5", "MQTT 3.1.1"]
    for row in rows:
        paho_us, link_us, ratio = (float(v) for v in row.split()[-3:])
        assert paho_us > 0
        assert link_us > 0
        assert ratio == pytest.approx(link_us / paho_us, abs=0.01)


@pytest.mark.timeout(240)
def test_instruction_count_runs_both_servers_under_callgrind(tmp_path: Path) -> None:
    if shutil.which("valgrind") is None:
        pytest.fail("valgrind is not installed: run the README's test command (it installs it)")
    out = tmp_path / "instructions.json"
    result = run_script(tmp_path, "instructions.py", "--calls", "20", "--json", str(out), timeout=230)
    assert result.stdout.splitlines()[0].split() == ["baseline", "bridge", "bridge/baseline"]
    counts = json.loads(out.read_text())
    assert counts["baseline"]["hits"] == counts["bridge"]["hits"] > 50  # the same hits for both
    for name in ("baseline", "bridge"):
        # Counted, and for those hits only: an HTTP hit in Python takes far more than 10,000
        # instructions, and start-up (imports: billions) is not in it.
        assert 10_000 < counts[name]["per_hit"] < 20_000_000, counts


@pytest.mark.timeout(120)
@pytest.mark.skipif(os.geteuid() != 0, reason="bench/chaos.py mounts a tmpfs: root (CI runs as root)")
def test_chaos_soak_brings_each_fault_and_finds_every_accepted_hit(tmp_path: Path) -> None:
    result = run_script(tmp_path, "chaos.py", "--each", "--rate", "50", timeout=110)
    lines = dict(line.split(": ", 1) for line in result.stdout.splitlines())
    faults = lines["faults"]
    for fault in (
        "broker away",
        "disk full",
        "bridge killed",
        "bridge stopped (exit code 0)",
        "bridge killed while the broker was away",
        "store damaged: started over",
    ):
        assert fault in faults, faults
    accepted = int(lines["answered 200"].split(";")[0])
    assert accepted > 100, lines
    assert lines["answered 200"] == f"{accepted}; their events arrived: {accepted}"
    assert lines["missing"] == "0 []"
    assert lines["the bridge's last stop"] == "exit code 0"
