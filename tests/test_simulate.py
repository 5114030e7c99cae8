"""The phone simulator against a real bridge: calls in its MQTT history, rate, refusals, the command."""

import json
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bridge.mqtt import Endpoint
from bridge.sequences import Flavour, Scenario, make_phone
from bridge.simulate import Options, simulate
from tests.conftest import (
    Mosquitto,
    RunningBridge,
    Watcher,
    free_port,
    make_config,
    start_bridge,
    wait_until,
)

ROOT = Path(__file__).resolve().parent.parent


def history_results(watcher: Watcher) -> Counter[str]:
    """The results of every call in the last history of every phone."""
    found: Counter[str] = Counter()
    with watcher.lock:
        topics = {m.topic for m in watcher.messages if m.topic.endswith("/history")}
    for topic in topics:
        found.update(rec["result"] for rec in watcher.last(topic))
    return found


@pytest.mark.parametrize("flavour", [Flavour.YEALINK, Flavour.SNOM])
def test_calls_played_show_in_the_bridges_history(
    running: RunningBridge, watcher: Watcher, flavour: Flavour
) -> None:
    chosen = (
        Scenario.INCOMING_ANSWERED,
        Scenario.INCOMING_MISSED,
        Scenario.OUTGOING_ANSWERED,
        Scenario.OUTGOING_CANCELLED,
        Scenario.CALL_WAITING,
        Scenario.REGISTRATION,
    )
    options = Options("127.0.0.1", running.port, rate=0, calls=8, seed=0, flavour=flavour, scenarios=chosen)
    summary = simulate(options)
    assert summary.statuses == {"200": summary.hits}
    assert {"answered", "missed", "cancelled"} <= set(summary.results)  # one phone: the seed decides
    wait_until(lambda: history_results(watcher) == summary.results, what="every call in history")
    phone = make_phone(0, flavour)
    topic = f"{running.base}/{phone.mac}"
    wait_until(lambda: watcher.last(f"{topic}/call")["state"] == "idle", what="the phone to be idle")
    wait_until(lambda: watcher.last(f"{topic}/status")["hook"] == "on", what="the handset down")
    status = watcher.last(f"{topic}/status")
    assert status["phone_type"] == phone.phone_type
    assert status["lines"] == {phone.extension: "registered"}  # Snom's log_on registers too
    assert status["ip"] == phone.ip  # each phone sends from the address it reports


def test_timestamps_reach_the_event_under_extra(running: RunningBridge, watcher: Watcher) -> None:
    options = Options(
        "127.0.0.1", running.port, rate=0, calls=1, scenarios=(Scenario.DND,), timestamps=True, seed=2
    )
    summary = simulate(options)
    assert summary.hits == 2
    mac = make_phone(0, Flavour.MIXED).mac
    event = watcher.wait_for(f"{running.base}/{mac}/event", lambda p: p["event_type"] == "dnd_off")
    assert event["extra"]["t"].isdigit()
    assert abs(int(event["extra"]["t"]) / 1e9 - datetime.now(UTC).timestamp()) < 60


def test_calls_with_refused_hits_are_not_counted(mosquitto: Mosquitto, base_topic: str) -> None:
    config = make_config(base_topic, mosquitto.url, {"http": {"token": "s3cret"}})
    rb = start_bridge(config, Endpoint("127.0.0.1", mosquitto.port))
    try:
        scenarios = (Scenario.INCOMING_MISSED,)
        refused = simulate(Options("127.0.0.1", rb.port, rate=0, calls=2, scenarios=scenarios))
        accepted = simulate(
            Options("127.0.0.1", rb.port, rate=0, calls=2, scenarios=scenarios, token="s3cret")
        )
    finally:
        rb.stop()
    assert refused.statuses == {"403": 6}
    assert (refused.results, refused.broken) == ({}, 2)
    assert accepted.statuses == {"200": 6}
    assert (accepted.results, accepted.broken) == ({"missed": 2}, 0)


def test_the_rate_bounds_the_hits_sent(running: RunningBridge) -> None:
    options = Options("127.0.0.1", running.port, phones=4, rate=20, duration=1.0)
    summary = simulate(options)
    assert 0 < summary.hits <= 21
    assert summary.statuses == {"200": summary.hits}


def test_finish_plays_the_calls_under_way_to_their_end(running: RunningBridge) -> None:
    """With `finish`, the duration stops new calls only: the bridge is left with none open (the
    benchmark's later phases would otherwise carry the calls its earlier ones cut short)."""
    options = Options("127.0.0.1", running.port, phones=30, rate=0, duration=0.3, finish=True)
    summary = simulate(options)
    assert summary.statuses == {"200": summary.hits}
    assert summary.broken == 0
    phones = [d.phone for d in running.bridge.devices.values() if d.id.startswith("02")]
    assert len(phones) == 30
    assert [p.device for p in phones if p.calls] == []
    played = sum(n for s, n in summary.scenarios.items() if s != "registration")
    assert played > 30  # calls went on past the boot registrations


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bridge", "simulate", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
    )


def test_simulate_command_plays_snom_calls(running: RunningBridge, watcher: Watcher) -> None:
    result = run_cli(
        "--server", f"127.0.0.1:{running.port}", "--type", "snom", "--calls", "3", "--rate", "0", "--json"
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["statuses"] == {"200": summary["hits"]}
    assert summary["scenarios"]["registration"] == 1
    phone = make_phone(0, Flavour.SNOM)
    status = watcher.wait_for(f"{running.base}/{phone.mac}/status", lambda p: bool(p["lines"]))
    assert status["phone_type"] == "snom"
    assert status["lines"] == {phone.extension: "registered"}


def test_simulate_command_says_when_nothing_answers() -> None:
    result = run_cli("--server", f"127.0.0.1:{free_port()}", "--calls", "1", "--rate", "0")
    assert result.returncode == 1
    answers = next(line for line in result.stdout.splitlines() if line.startswith("answers:"))
    assert answers.startswith("answers: refused: ")
    assert "," not in answers  # nothing but refused
    assert "calls played: none" in result.stdout


def test_simulate_command_names_an_unknown_scenario() -> None:
    result = run_cli("--scenarios", "incoming_answered,ringing")
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "'ringing'" in result.stderr
