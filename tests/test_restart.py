"""Nothing accepted is lost across restarts: kill -9 mid-call, a broker away while the bridge stops."""

import json
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from bridge.mqtt import Endpoint
from bridge.rows import to_text
from bridge.store import FILE_NAME
from tests.conftest import (
    Mosquitto,
    RunningBridge,
    Watcher,
    free_port,
    make_config,
    start_bridge,
    unique_base,
    wait_until,
)
from tests.test_run import ROOT, BridgeProcess, environment

MAC = "001565aabbcc"
CALL = f"device={MAC}&local=100&remote=5551234&displayremote=Alice&callid=k9@pbx"


def config(tmp_path: Path, broker: Mosquitto, base: str, **calls: object) -> dict[str, dict[str, object]]:
    return {
        "http": {"host": "127.0.0.1", "port": free_port()},
        "mqtt": {"url": broker.url, "base_topic": base, "client_id": f"bridge-{base}"},
        "arp": {"enabled": False},
        "storage": {"dir": str(tmp_path / "data")},
        "poll": {"interval": 0},
        "calls": dict(calls),
    }


def start(
    tmp_path: Path, settings: dict[str, dict[str, object]], processes: list[BridgeProcess]
) -> BridgeProcess:
    bridge = BridgeProcess(tmp_path / "run", settings)
    processes.append(bridge)
    bridge.wait_ready()
    return bridge


@pytest.fixture
def watched(own_mosquitto: Mosquitto) -> Iterator[tuple[str, Watcher]]:
    """A base topic of the test's own, and a watcher of all of it whose session outlives the
    restarts of the bridge and of the broker."""
    base = unique_base()
    watcher = Watcher(own_mosquitto.port, f"{base}/#", persistent=True)
    try:
        yield base, watcher
    finally:
        watcher.close()


def ok(bridge: BridgeProcess, path: str) -> None:
    response = bridge.hit(path)
    assert (response.status_code, response.text) == (200, "OK")


def test_kill_9_in_the_middle_of_a_call_loses_nothing(
    tmp_path: Path, own_mosquitto: Mosquitto, watched: tuple[str, Watcher], processes: list[BridgeProcess]
) -> None:
    base, watcher = watched
    settings = config(tmp_path, own_mosquitto, base)
    first = start(tmp_path, settings, processes)
    ok(first, f"/incomingcall/yealink?{CALL}")
    ok(first, f"/callestablished/yealink?{CALL}")
    first.proc.kill()  # SIGKILL: no chance to save anything more
    first.proc.wait()

    second = start(tmp_path, settings, processes)
    devices = second.hit("/api/devices").json()
    assert [d["id"] for d in devices] == [MAC]  # the learned phone survived
    ok(second, f"/callterminated/yealink?{CALL}")
    ended = watcher.wait_for(f"{base}/{MAC}/event", lambda p: p["event_type"] == "call_ended")
    assert ended["call"]["result"] == "answered"
    assert ended["call"]["number"] == "5551234"
    assert ended["call"]["talk_seconds"] >= 0
    assert second.terminate() == 0
    log = subprocess.run(
        [sys.executable, "-m", "bridge", "calls", "--format", "json"],
        cwd=tmp_path / "run",
        env=environment(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert log.returncode == 0, log.stderr
    assert [(r["call_id"], r["result"]) for r in json.loads(log.stdout)] == [("k9@pbx", "answered")]


def test_a_call_whose_end_was_missed_while_down_ends_by_timeout(
    tmp_path: Path, own_mosquitto: Mosquitto, watched: tuple[str, Watcher], processes: list[BridgeProcess]
) -> None:
    base, watcher = watched
    first = start(tmp_path, config(tmp_path, own_mosquitto, base), processes)
    ok(first, f"/incomingcall/yealink?{CALL}")
    first.proc.kill()
    first.proc.wait()
    start(tmp_path, config(tmp_path, own_mosquitto, base, ring_timeout=0.5), processes)
    ended = watcher.wait_for(f"{base}/{MAC}/event", lambda p: p["event_type"] == "call_ended")
    assert ended["call"]["result"] == "missed"
    assert ended["call"]["call_id"] == "k9@pbx"


def test_messages_queued_when_the_bridge_stops_arrive_after_it_starts_again(
    tmp_path: Path, own_mosquitto: Mosquitto, watched: tuple[str, Watcher], processes: list[BridgeProcess]
) -> None:
    base, watcher = watched
    settings = config(tmp_path, own_mosquitto, base)
    first = start(tmp_path, settings, processes)
    ok(first, f"/offhook/yealink?device={MAC}")
    watcher.wait_for(f"{base}/{MAC}/event", lambda p: p["event_type"] == "off_hook")
    # Acknowledged too: else it goes out again after the start, as at-least-once allows.
    wait_until(lambda: first.hit("/healthz").json()["queue_length"] == 0, what="the queue to empty")
    own_mosquitto.stop()
    for event in ("incomingcall", "callestablished", "callterminated"):
        ok(first, f"/{event}/yealink?{CALL}")
    assert first.terminate() == 0  # with the broker away: the queue goes to the store
    own_mosquitto.start()
    start(tmp_path, settings, processes)
    ended = watcher.wait_for(f"{base}/{MAC}/event", lambda p: p["event_type"] == "call_ended")
    assert ended["call"]["result"] == "answered"
    kinds = [m.json()["event_type"] for m in watcher.on(f"{base}/{MAC}/event")]
    assert kinds[:5] == ["off_hook", "incoming_call", "call_established", "call_terminated", "call_ended"]


def test_call_ended_of_a_killed_bridge_is_rebuilt_from_the_store(
    tmp_path: Path, own_mosquitto: Mosquitto, watched: tuple[str, Watcher], processes: list[BridgeProcess]
) -> None:
    base, watcher = watched
    settings = config(tmp_path, own_mosquitto, base)
    first = start(tmp_path, settings, processes)
    own_mosquitto.stop()
    for event in ("incomingcall", "callterminated"):
        ok(first, f"/{event}/yealink?{CALL}")
    first.proc.kill()  # its queue dies with it; the call is in the store
    first.proc.wait()
    own_mosquitto.start()
    start(tmp_path, settings, processes)
    ended = watcher.wait_for(f"{base}/{MAC}/event", lambda p: p["event_type"] == "call_ended")
    assert ended["call"]["result"] == "missed"
    history = watcher.wait_for(f"{base}/{MAC}/history", lambda p: len(p) == 1)
    assert history[0]["call_id"] == "k9@pbx"


def test_kill_9_while_the_broker_is_away_loses_no_event_and_sends_call_ended_once(
    tmp_path: Path, own_mosquitto: Mosquitto, watched: tuple[str, Watcher], processes: list[BridgeProcess]
) -> None:
    """While the broker is away, the queue is kept in the store's outbox too: a kill then loses
    none of it. Once the broker has it all, the outbox is cleared."""
    base, watcher = watched
    settings = config(tmp_path, own_mosquitto, base)
    database = tmp_path / "data" / FILE_NAME
    first = start(tmp_path, settings, processes)
    ok(first, f"/offhook/yealink?device={MAC}")
    watcher.wait_for(f"{base}/{MAC}/event", lambda p: p["event_type"] == "off_hook")
    own_mosquitto.stop()
    wait_until(lambda: not first.hit("/healthz").json()["mqtt_connected"], what="the bridge to see it")
    sent = []
    for n in range(20):
        event = ("incomingcall", "callterminated")[n % 2] if n < 2 else ("dnd_on", "dnd_off")[n % 2]
        ok(first, f"/{event}/yealink?{CALL}&seq={n}")
        sent.append(str(n))
    assert outbox(database) > 20  # each hit's event and what else it published
    first.proc.kill()
    first.proc.wait()
    own_mosquitto.start()
    start(tmp_path, settings, processes)

    def arrived() -> list[str]:
        return [
            m.json()["extra"]["seq"] for m in watcher.on(f"{base}/{MAC}/event") if "seq" in m.json()["extra"]
        ]

    wait_until(lambda: set(arrived()) >= set(sent), what="every event of the hits answered while away")
    assert arrived()[: len(sent)] == sent  # in order
    wait_until(lambda: outbox(database) == 0, what="the outbox cleared once delivered")
    kinds = [m.json()["event_type"] for m in watcher.on(f"{base}/{MAC}/event")]
    assert kinds.count("call_ended") == 1  # the outbox had it: not rebuilt as well


def test_hits_answered_just_before_a_kill_9_reach_the_broker(
    tmp_path: Path, own_mosquitto: Mosquitto, watched: tuple[str, Watcher], processes: list[BridgeProcess]
) -> None:
    """While connected, a hit's messages are written to the broker's connection before the hit is
    answered (README, Reliability): a bridge killed the moment it answers has lost none of them.
    Three rounds of ten hits, each ended by a SIGKILL as soon as its last hit is answered."""
    base, watcher = watched
    settings = config(tmp_path, own_mosquitto, base)
    sent = []
    for round_ in range(3):
        bridge = start(tmp_path, settings, processes)
        for n in range(10):
            ok(bridge, f"/{('dnd_on', 'dnd_off')[n % 2]}/yealink?device={MAC}&seq={round_}-{n}")
            sent.append(f"{round_}-{n}")
        bridge.proc.kill()
        bridge.proc.wait()

    def arrived() -> set[str]:
        return {m.json()["extra"].get("seq") for m in watcher.on(f"{base}/{MAC}/event")}

    wait_until(lambda: arrived() >= set(sent), what="the event of every hit answered before a kill")


def outbox(database: Path) -> int:
    with closing(sqlite3.connect(database)) as db:
        return int(db.execute("SELECT count(*) FROM outbox").fetchone()[0])


def test_call_ended_the_broker_acknowledged_is_not_rebuilt_after_a_kill(
    tmp_path: Path, own_mosquitto: Mosquitto, watched: tuple[str, Watcher], processes: list[BridgeProcess]
) -> None:
    """Acknowledged receipts are cleared in the store in batches (ANNOUNCED_EVERY): once cleared,
    a kill -9 does not send that call_ended again."""
    base, watcher = watched
    settings = config(tmp_path, own_mosquitto, base)
    database = tmp_path / "data" / FILE_NAME
    first = start(tmp_path, settings, processes)
    for event in ("incomingcall", "callterminated"):
        ok(first, f"/{event}/yealink?{CALL}")
    watcher.wait_for(f"{base}/{MAC}/event", lambda p: p["event_type"] == "call_ended")
    wait_until(lambda: unannounced(database) == 0, what="the receipt cleared in the store")
    first.proc.kill()
    first.proc.wait()
    second = start(tmp_path, settings, processes)
    ok(second, f"/offhook/yealink?device={MAC}")  # a marker: everything before it has arrived
    watcher.wait_for(f"{base}/{MAC}/event", lambda p: p["event_type"] == "off_hook")
    kinds = [m.json()["event_type"] for m in watcher.on(f"{base}/{MAC}/event")]
    assert kinds.count("call_ended") == 1


def unannounced(database: Path) -> int:
    with closing(sqlite3.connect(database)) as db:
        return int(db.execute("SELECT count(*) FROM calls WHERE receipt IS NOT NULL").fetchone()[0])


@pytest.fixture
def with_contacts(
    tmp_path: Path, mosquitto: Mosquitto, watcher: Watcher, base_topic: str
) -> Iterator[RunningBridge]:
    book = tmp_path / "contacts.csv"
    book.write_text("number,name\n+49 30 1234567,Bob Builder\n")
    settings = make_config(
        base_topic, mosquitto.url, {"contacts": {"file": str(book), "country_code": "+49"}}
    )
    rb = start_bridge(settings, Endpoint("127.0.0.1", mosquitto.port))
    yield rb
    rb.stop()


def test_caller_name_from_contacts_when_the_phone_sends_none(
    with_contacts: RunningBridge, watcher: Watcher
) -> None:
    rb = with_contacts
    ok_response = rb.hit(f"/incomingcall/yealink?device={MAC}&remote=sip:0301234567@pbx&callid=n1")
    assert ok_response.status_code == 200
    call = watcher.wait_for(f"{rb.base}/{MAC}/call", lambda p: p["state"] == "ringing")
    assert call["name"] == "Bob Builder"
    assert rb.hit(f"/callterminated/yealink?device={MAC}&callid=n1").status_code == 200
    ended = watcher.wait_for(f"{rb.base}/{MAC}/event", lambda p: p["event_type"] == "call_ended")
    assert (ended["call"]["name"], ended["call"]["name_source"]) == ("Bob Builder", "contacts")
    # the phone's own display name wins over the contacts file
    shown = "displayremote=Robert"
    assert (
        rb.hit(f"/incomingcall/yealink?device={MAC}&remote=+49301234567&{shown}&callid=n2").status_code == 200
    )
    call = watcher.wait_for(f"{rb.base}/{MAC}/call", lambda p: p["call_id"] == "n2")
    assert call["name"] == "Robert"


def test_calls_command_without_a_store_says_so(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bridge", "calls"],
        cwd=tmp_path,
        env=environment() | {"PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "no call log" in done.stderr


def test_a_phone_heard_once_is_stored_online_with_its_call(tmp_path: Path, mosquitto: Mosquitto) -> None:
    """What a restart restates comes from the store: a phone's first hit must leave it there as
    the bridge then shows it (online, its call's time), not as it was just before."""
    base = unique_base()
    settings = make_config(base, mosquitto.url)
    rb = start_bridge(settings, Endpoint("127.0.0.1", mosquitto.port))
    try:
        ok_response = rb.hit(f"/incomingcall/yealink?{CALL}")
        assert ok_response.status_code == 200
        shown = rb.bridge.devices[MAC]
        assert (shown.online, shown.call_updated is not None) == (True, True)
        with closing(sqlite3.connect(Path(settings.storage.dir) / FILE_NAME)) as db:
            online, call_updated = db.execute(
                "SELECT online, call_updated FROM devices WHERE id = ?", (MAC,)
            ).fetchone()
        assert (online, call_updated) == (1, to_text(shown.call_updated))
    finally:
        rb.stop()
