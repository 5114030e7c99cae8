"""A store SQLite finds damaged, or a file that is not one: set aside as it was, and a new store
started, so the bridge runs on (as Home Assistant's recorder does with a damaged database)."""

import hashlib
import logging
import re
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path

import pytest

from bench.chaos import damage_store
from bridge.store import FILE_NAME, MIGRATIONS, PAGE_SIZE
from tests.conftest import (
    Mosquitto,
    RunningBridge,
    Watcher,
    make_config,
    start_bridge,
    unique_base,
    wait_until,
)
from tests.test_cli import run
from tests.test_devices import request
from tests.test_restart import outbox

A, B = "001565da0001", "001565da0002"


def damage_pages(path: Path) -> None:
    """Pages 4 to 6 overwritten, as a failing SD card might leave them; the header is intact."""
    data = bytearray(path.read_bytes())
    data[3 * PAGE_SIZE : 6 * PAGE_SIZE] = b"\x5a" * (3 * PAGE_SIZE)
    path.write_bytes(data)


def not_a_database(path: Path) -> None:
    path.write_bytes(b"these are not the bytes of a SQLite database\n" * 100)


@pytest.mark.parametrize(
    ("damage", "read", "calls"),
    [
        # Page 6 is the phones' table: the call is read, the phone is not.
        (
            damage_pages,
            "phones: 0, calls: 1; stretches of rows that could not be read: 1",
            [("5551", "answered")],
        ),
        (not_a_database, "phones: 0, calls: 0; stretches of rows that could not be read: 3", []),
    ],
    ids=["damaged pages", "not a database"],
)
def test_a_damaged_store_is_set_aside_as_it_was_and_the_bridge_runs_on_what_could_be_read_of_it(
    mosquitto: Mosquitto,
    caplog: pytest.LogCaptureFixture,
    damage: Callable[[Path], None],
    read: str,
    calls: list[tuple[str, str]],
) -> None:
    caplog.set_level(logging.INFO, logger="bridge")
    base = unique_base()
    config = make_config(base, mosquitto.url)
    directory = Path(config.storage.dir)
    first = start_bridge(config, mosquitto.endpoint)
    for event in ("incoming_call", "call_established", "call_terminated"):
        assert first.hit(f"/{event}/yealink?device={A}&remote=5551").status_code == 200
    first.stop()
    with closing(sqlite3.connect(directory / FILE_NAME)) as db:  # the damage must hit the tables
        assert db.execute("SELECT count(*) FROM calls").fetchone() == (1,)
        assert db.execute("PRAGMA page_count").fetchone()[0] > 6
    damage(directory / FILE_NAME)
    digest = hashlib.sha256((directory / FILE_NAME).read_bytes()).hexdigest()

    watcher = Watcher(mosquitto.port, f"{base}/{B}/event")
    again = start_bridge(config, mosquitto.endpoint)
    try:
        told = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert len(told) == 1, told
        assert told[0].startswith(f"storage: {directory / FILE_NAME}: ")
        assert told[0].endswith(
            f", and a new store started with what could still be read of it ({read}); other phones come "
            "back with their next hits"
        )
        moved = directory / told[0].split("set aside as ")[1].split(",")[0]
        assert re.fullmatch(rf"{FILE_NAME}\.corrupt-\d{{8}}T\d{{6}}Z", moved.name)
        assert hashlib.sha256(moved.read_bytes()).hexdigest() == digest  # kept as it was

        assert again.hit(f"/incoming_call/yealink?device={B}&remote=5552").status_code == 200
        assert watcher.wait_for(f"{base}/{B}/event")["event_type"] == "incoming_call"
        assert {d["id"] for d in again.hit("/api/devices").json()} == {B}
        assert [(c["number"], c["result"]) for c in again.hit("/api/calls").json()] == calls
        with closing(sqlite3.connect(directory / FILE_NAME)) as db:  # the new one keeps what comes now
            assert db.execute("PRAGMA quick_check").fetchone() == ("ok",)
            assert [row[0] for row in db.execute("SELECT id FROM devices")] == [B]
    finally:
        again.stop()
        watcher.close()


def test_run_refuses_a_store_of_a_newer_bridge_in_one_line(mosquitto: Mosquitto, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    with closing(sqlite3.connect(data / FILE_NAME)) as db:
        db.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    config = tmp_path / "config.toml"
    config.write_text(f'[mqtt]\nurl = "{mosquitto.url}"\n[storage]\ndir = "{data}"\n[http]\nport = 1\n')
    result = run("run", "--config", str(config))
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines()[-1] == (
        f"amego-bridge: {data / FILE_NAME} is from a newer amego-bridge (schema {len(MIGRATIONS) + 1}, "
        f"this one knows {len(MIGRATIONS)}); upgrade the bridge or move the file away"
    )
    assert "Traceback" not in result.stderr
    assert not list(data.glob("*.corrupt-*"))  # not damaged: left where it is


def intact(path: Path) -> bool:
    with closing(sqlite3.connect(path)) as db:
        try:
            return bool(db.execute("PRAGMA quick_check").fetchone() == ("ok",))
        except sqlite3.DatabaseError:
            return False


def test_a_store_damaged_while_the_bridge_runs_is_started_over_with_all_it_holds_and_the_hit_is_taken(
    mosquitto: Mosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bridge")
    base = unique_base()
    config = make_config(base, mosquitto.url, {"calls": {"history_size": 1}})
    path = Path(config.storage.dir) / FILE_NAME
    watcher = Watcher(mosquitto.port, f"{base}/+/event")
    bridge = start_bridge(config, mosquitto.endpoint)
    try:
        for number in ("5550", "5551"):  # the first is only in the store: the bridge holds the last one
            for event in ("incoming_call", "call_established", "call_terminated"):
                assert bridge.hit(f"/{event}/yealink?device={A}&remote={number}").status_code == 200
        assert bridge.hit(f"/incoming_call/yealink?device={B}&remote=5552").status_code == 200  # ringing
        damage_store(path)

        # The hit that finds the damage is taken: its write is made on the new store.
        assert bridge.hit(f"/incoming_call/yealink?device={A}&remote=5553").status_code == 200
        assert (
            watcher.wait_for(f"{base}/{A}/event", lambda p: p["number"] == "5553")["event_type"]
            == "incoming_call"
        )
        told = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(told) == 1, told
        assert told[0].startswith(f"storage: {path}: database disk image is malformed; set aside as ")
        assert told[0].endswith(
            ", and a new store started with what the bridge holds (phones: 2, their last calls: 1) and "
            "what could still be read of it (older calls: 1; stretches of rows that could not be read: 1)"
        )
        moved = path.with_name(told[0].split("set aside as ")[1].split(",")[0])
        assert re.fullmatch(rf"{FILE_NAME}\.corrupt-\d{{8}}T\d{{6}}Z", moved.name)
        assert not intact(moved)  # kept as it was
        health = bridge.hit("/healthz").json()
        assert (health["status"], health["storage_error"]) == ("ok", None)
        assert intact(path)
        with closing(sqlite3.connect(path)) as db:
            assert sorted(row[0] for row in db.execute("SELECT id FROM devices")) == [A, B]
            assert sorted(row[0] for row in db.execute("SELECT number FROM calls")) == ["5550", "5551"]
        assert bridge.hit(f"/call_terminated/yealink?device={B}").status_code == 200  # B's call ends
    finally:
        bridge.stop()

    caplog.clear()
    again = start_bridge(config, mosquitto.endpoint)  # what the new store kept
    try:
        assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
        calls = {(c["device"], c["number"], c["result"]) for c in again.hit("/api/calls").json()}
        assert calls == {(A, "5550", "answered"), (A, "5551", "answered"), (B, "5552", "missed")}
        assert set(again.bridge.devices) == {A, B}
        ringing = again.bridge.devices[A].phone
        assert (ringing.state, [call.number for call in ringing.calls]) == ("ringing", ["5553"])
    finally:
        again.stop()
        watcher.close()


@pytest.fixture
def running(mosquitto: Mosquitto, caplog: pytest.LogCaptureFixture) -> Iterator[tuple[RunningBridge, Path]]:
    """A bridge, with its log captured, and the path of its store."""
    caplog.set_level(logging.INFO, logger="bridge")
    config = make_config(unique_base(), mosquitto.url)
    bridge = start_bridge(config, mosquitto.endpoint)
    try:
        yield bridge, Path(config.storage.dir) / FILE_NAME
    finally:
        bridge.stop()


def test_a_store_damaged_again_within_the_hour_is_not_started_over_again(
    running: tuple[RunningBridge, Path], caplog: pytest.LogCaptureFixture
) -> None:
    bridge, path = running
    assert bridge.hit(f"/incoming_call/yealink?device={A}&remote=5551").status_code == 200
    damage_store(path)
    assert bridge.hit(f"/call_established/yealink?device={A}").status_code == 200
    damage_store(path)
    refused = bridge.hit(f"/call_terminated/yealink?device={A}")
    assert (refused.status_code, refused.text) == (
        503,
        "cannot store the event (database disk image is malformed); try again\n",
    )
    told = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(told) == 2, told
    assert told[1] == (
        f"storage: cannot write phone {A} (database disk image is malformed); hits that change a phone "
        "get 503 until it can; restart the bridge to set the damaged store aside"
    )
    assert len(list(path.parent.glob(f"{FILE_NAME}.corrupt-*"))) == 1
    assert bridge.bridge.devices[A].phone.state == "talking"  # the refused hit changed nothing


def test_a_call_log_found_damaged_while_the_bridge_runs_is_started_over_and_read(
    running: tuple[RunningBridge, Path], mosquitto: Mosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    bridge, path = running
    for number in ("5550", "5551"):
        for event in ("incoming_call", "call_established", "call_terminated"):
            assert bridge.hit(f"/{event}/yealink?device={A}&remote={number}").status_code == 200
    damage_store(path, "calls")

    answer = bridge.hit("/api/calls")
    assert answer.status_code == 200, answer.text
    assert [(c["number"], c["result"]) for c in answer.json()] == [
        ("5551", "answered"),
        ("5550", "answered"),
    ]
    told = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(told) == 1, told
    assert told[0].endswith(
        ", and a new store started with what the bridge holds (phones: 1, their last calls: 2) and "
        "what could still be read of it (older calls: 0; stretches of rows that could not be read: 1)"
    )
    assert intact(path)

    # Again within the hour: not started over, and the request says why it has no records.
    damage_store(path, "calls")
    watcher = Watcher(mosquitto.port, f"{bridge.base}/bridge/response/#")
    try:
        answer = request(watcher, bridge.base, "calls", {"device": A})
    finally:
        watcher.close()
    assert (answer["status"], answer["error"]) == (
        "error",
        "cannot read the call log (database disk image is malformed); try again",
    )
    refused = bridge.hit("/api/calls")
    assert (refused.status_code, refused.text) == (
        503,
        "cannot read the call log (database disk image is malformed); try again\n",
    )
    assert bridge.hit("/").status_code == 200  # the status page still shows, without its last calls
    metrics = bridge.hit("/metrics").text
    assert 'amego_refusals_total{reason="storage",status="503"} 1.0' in metrics


def test_a_store_started_over_while_the_broker_is_away_keeps_the_queue_until_it_is_delivered(
    own_mosquitto: Mosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bridge")
    base = unique_base()
    config = make_config(base, own_mosquitto.url)
    path = Path(config.storage.dir) / FILE_NAME
    watcher = Watcher(own_mosquitto.port, f"{base}/{A}/event", persistent=True)
    bridge = start_bridge(config, own_mosquitto.endpoint)
    try:
        own_mosquitto.stop()
        wait_until(lambda: not bridge.hit("/healthz").json()["mqtt_connected"], what="the bridge to see it")
        for n in range(5):
            assert bridge.hit(f"/dnd_{('on', 'off')[n % 2]}/yealink?device={A}&seq={n}").status_code == 200
        damage_store(path)
        assert bridge.hit(f"/incoming_call/yealink?device={A}&remote=5551&seq=5").status_code == 200
        assert any("set aside as" in r.getMessage() for r in caplog.records)
        assert outbox(path) >= 5  # the new store keeps what waits for the broker

        own_mosquitto.start()
        wait_until(
            lambda: {m.json()["extra"].get("seq") for m in watcher.on(f"{base}/{A}/event")} >= set("012345"),
            what="every event answered while the broker was away",
        )
        wait_until(lambda: outbox(path) == 0, what="the outbox cleared once delivered")
    finally:
        bridge.stop()
        watcher.close()
