"""A store on a disk that fills up: a real tmpfs of a few hundred kB under `storage.dir`.

Hits that change a phone are refused with 503 while nothing can be written, the bridge says so
once (log, `bridge/log`, /healthz, /metrics), and it takes hits again as soon as there is room,
without a restart.
"""

import errno
import logging
import os
import re
import shutil
import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path

import httpx
import pytest

from bridge import service
from bridge.store import FILE_NAME, Store
from tests.conftest import Mosquitto, Watcher, make_config, start_bridge, unique_base, wait_until
from tests.test_devices import request

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root (CI runs as root)"),
    pytest.mark.skipif(shutil.which("mount") is None, reason="mounting a tmpfs needs mount (util-linux)"),
]

DISK = "512k"


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK}", "tmpfs", str(disk)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def fill(disk: Path) -> Path:
    """A file that takes every free byte of `disk`."""
    filler = disk / "filler"
    chunk = b"\0" * 4096
    with filler.open("wb", buffering=0) as out:
        while True:
            try:
                out.write(chunk)
            except OSError as err:
                if err.errno == errno.ENOSPC:
                    return filler
                raise


def write_until_full(db: sqlite3.Connection) -> None:
    for n in range(100):
        db.execute("INSERT INTO meta (key, value) VALUES (?, 'x')", (f"filler{n}",))


def mac(n: int) -> str:
    return f"0015650d{n:04x}"


def first_refused(hit: Callable[[str], httpx.Response], start: int, limit: int = 400) -> int:
    """Phones from `start` get a first hit each until one is refused; its number."""
    for n in range(start, start + limit):
        answer = hit(f"/incoming_call/yealink?device={mac(n)}&remote=555{n}")
        if answer.status_code == 503:
            assert answer.text == "cannot store the event (database or disk is full); try again\n"
            return n
        assert answer.status_code == 200, answer.text
    raise AssertionError(f"{limit} new phones were all stored on a full disk")


def told(caplog: pytest.LogCaptureFixture, level: int, part: str = "") -> list[str]:
    """The bridge's lines about its store, at `level`, that contain `part`."""
    lines = [
        r.getMessage()
        for r in caplog.records
        if r.name in ("bridge.service", "bridge.keeper") and r.levelno == level
    ]
    return [line for line in lines if line.startswith("storage:") and part in line]


def refusals(metrics: str, reason: str) -> float:
    found = re.search(rf'^amego_refusals_total\{{reason="{reason}",status="503"\}} (\S+)$', metrics, re.M)
    return float(found.group(1)) if found else 0.0


@pytest.fixture
def checkpoints(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Each checkpoint the bridge runs, on every tick of its timers (1 s): True when it worked."""
    monkeypatch.setattr(service, "CHECKPOINT_EVERY", 0.0)
    ran: list[bool] = []
    checkpoint = Store.checkpoint

    def counted(store: Store) -> int:
        try:
            left = checkpoint(store)
        except sqlite3.Error:
            ran.append(False)
            raise
        ran.append(True)
        return left

    monkeypatch.setattr(Store, "checkpoint", counted)
    return ran


def test_a_full_disk_refuses_hits_with_503_says_so_once_and_the_bridge_takes_hits_again_when_there_is_room(
    small_disk: Path, mosquitto: Mosquitto, caplog: pytest.LogCaptureFixture, checkpoints: list[bool]
) -> None:
    caplog.set_level(logging.INFO, logger="bridge")
    base = unique_base()
    watcher = Watcher(mosquitto.port, f"{base}/#")
    config = make_config(base, mosquitto.url, {"storage": {"dir": str(small_disk / "data")}})
    rb = start_bridge(config, mosquitto.endpoint)
    try:
        assert rb.hit(f"/incoming_call/yealink?device={mac(0)}&remote=5550").status_code == 200
        filler = fill(small_disk)
        # A rename writes one page, which may still fit where the WAL file's last block has room
        # (up to 3 do). The first refused one leaves the name as it was.
        for n in range(5):
            renamed = request(watcher, base, "device/rename", {"id": mac(0), "name": f"Desk {n}"})
            if renamed["status"] == "error":
                break
        assert renamed["error"] == "cannot store the new name (database or disk is full); try again"
        names = {d["id"]: d["name"] for d in rb.hit("/api/devices").json()}
        assert names[mac(0)] == (f"Desk {n - 1}" if n else mac(0))
        refused = first_refused(rb.hit, 1)
        devices = rb.hit("/healthz").json()["devices"]
        for _ in range(3):  # refused again, each with its own line, and the error told once
            assert rb.hit(f"/incoming_call/yealink?device={mac(refused)}&remote=1").status_code == 503
        assert rb.hit(f"/call_terminated/yealink?device={mac(0)}").status_code == 503  # a known phone's
        removed = request(watcher, base, "device/remove", {"id": mac(0)})
        assert removed["error"] == (
            f"cannot remove {mac(0)} from the store (database or disk is full); try again"
        )
        assert mac(0) in {d["id"] for d in rb.hit("/api/devices").json()}

        health = rb.hit("/healthz").json()
        assert health["status"] == "degraded"
        assert health["storage_error"] == "database or disk is full"
        assert health["devices"] == devices  # the refused phone was not taken in
        checked = request(watcher, base, "health_check", {})["data"]
        assert (checked["healthy"], checked["status"]) == (False, "degraded")
        page = rb.hit("/").text  # the status page too (tests/test_web.py shows it live)
        assert (
            '<p class="problem">The store cannot write (database or disk is full): hits that change' in page
        )
        metrics = rb.hit("/metrics").text
        assert (refusals(metrics, "storage"), refusals(metrics, "queue_full")) == (5, 0)
        assert len([r for r in caplog.records if r.getMessage().startswith("refused 503")]) == 5
        assert told(caplog, logging.ERROR, "cannot write") == [
            f"storage: cannot write phone {mac(0)} (database or disk is full); "
            "hits that change a phone get 503 until it can"
        ]
        on_mqtt = watcher.wait_for(f"{base}/bridge/log", lambda p: p["message"].startswith("storage: cannot"))
        assert on_mqtt["level"] == "error"
        # The checkpoint cannot grow the database by what the WAL holds: told once, not each time.
        before = len(checkpoints)
        wait_until(lambda: checkpoints[before:].count(False) >= 2, what="two checkpoints on the full disk")
        assert told(caplog, logging.ERROR, "write-ahead log") == [
            "storage: cannot copy the write-ahead log into the database (database or disk is full)"
        ]
        assert not [r for r in caplog.records if r.getMessage() == "timer step failed"]

        filler.unlink()  # room again, and no restart
        again = f"/incoming_call/yealink?device={mac(refused)}&remote=1"
        wait_until(lambda: rb.hit(again).status_code == 200, what="a hit taken once there is room")
        health = rb.hit("/healthz").json()
        assert (health["status"], health["storage_error"]) == ("ok", None)
        assert health["devices"] == devices + 1
        assert 'class="problem"' not in rb.hit("/").text
        failures = 1 + 5 + 1  # the rename, the hits and the removal
        assert told(caplog, logging.WARNING) == [
            f"storage: writing again, after {failures} failed writes (database or disk is full)"
        ]
        assert request(watcher, base, "device/rename", {"id": mac(0), "name": "Desk"})["status"] == "ok"
        # A checkpoint once there is room (its outcome is told on the loop, after its thread ends).
        back = ["storage: the write-ahead log is copied into the database again"]
        wait_until(lambda: told(caplog, logging.WARNING, "write-ahead log") == back, what="a checkpoint")
        assert checkpoints[-1]

        # Nothing of the refused hits was published or kept: the phone refused four times joins
        # now with one event, and phone 0's call, whose end was refused, was still ringing.
        watcher.wait_for(f"{base}/bridge/event", lambda p: p["data"].get("id") == mac(refused))
        joined = [m.json()["type"] for m in watcher.on(f"{base}/bridge/event")]
        assert joined.count("device_joined") == refused + 1  # phones 0 to `refused`, once each
        events = [m.json()["event_type"] for m in watcher.on(f"{base}/{mac(refused)}/event")]
        assert events == ["incoming_call"]
        assert rb.hit(f"/call_terminated/yealink?device={mac(0)}").status_code == 200
        ended = watcher.wait_for(f"{base}/{mac(0)}/event", lambda p: p["event_type"] == "call_ended")
        assert (ended["call"]["number"], ended["call"]["result"]) == ("5550", "missed")
    finally:
        rb.stop()
        watcher.close()


def test_a_bridge_stops_and_starts_on_a_full_disk_and_takes_hits_once_there_is_room(
    small_disk: Path, mosquitto: Mosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bridge")
    base = unique_base()
    config = make_config(base, mosquitto.url, {"storage": {"dir": str(small_disk / "data")}})
    rb = start_bridge(config, mosquitto.endpoint)
    assert rb.hit(f"/incoming_call/yealink?device={mac(0)}&remote=5550").status_code == 200
    filler = fill(small_disk)
    refused = first_refused(rb.hit, 1)
    rb.stop()
    assert not rb.thread.is_alive()
    # Before, uvicorn's "Application shutdown failed", with the store's traceback.
    assert not [r for r in caplog.records if r.name.startswith("uvicorn") and r.levelno >= logging.ERROR]
    # What room the WAL file's last block still had is taken, so that the start's one write fails.
    with (
        closing(sqlite3.connect(small_disk / "data" / FILE_NAME, isolation_level=None)) as db,
        pytest.raises(sqlite3.OperationalError, match="database or disk is full"),
    ):
        write_until_full(db)

    # Started again on the full disk (it failed to start: the mark of a running bridge is a
    # write): it runs, says what it cannot do, and refuses what it cannot store.
    caplog.clear()
    watcher = Watcher(mosquitto.port, f"{base}/{mac(0)}/event")
    again = start_bridge(config, mosquitto.endpoint)
    try:
        assert told(caplog, logging.ERROR) == [
            "storage: cannot write the mark of a running bridge (database or disk is full); "
            "hits that change a phone get 503 until it can"
        ]
        health = again.hit("/healthz").json()
        assert (health["status"], health["devices"]) == ("degraded", refused)
        assert again.hit(f"/incoming_call/yealink?device={mac(refused)}&remote=1").status_code == 503

        filler.unlink()  # the call that rang before the stop ends now: it was restored
        assert again.hit(f"/call_terminated/yealink?device={mac(0)}").status_code == 200
        ended = watcher.wait_for(f"{base}/{mac(0)}/event", lambda p: p["event_type"] == "call_ended")
        assert (ended["call"]["number"], ended["call"]["result"]) == ("5550", "missed")
        assert again.hit("/healthz").json()["status"] == "ok"
        # and the store now says a bridge runs on it: a kill from now on is told from a stop
        with closing(sqlite3.connect(small_disk / "data" / FILE_NAME)) as db:
            assert db.execute("SELECT value FROM meta WHERE key = 'clean_stop'").fetchone() == ("0",)
    finally:
        again.stop()
        watcher.close()
