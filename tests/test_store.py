import asyncio
import gc
import json
import sqlite3
import subprocess
import sys
from collections.abc import Sequence
from contextlib import closing
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bridge import keeper
from bridge.calls import Call, CallRecord, CallResult, CallState, Direction, Hook, LineState, Phone
from bridge.cli import main
from bridge.keeper import ANNOUNCED_BATCH
from bridge.mqtt import Message
from bridge.rows import StoredDevice
from bridge.salvage import salvage
from bridge.service import Bridge
from bridge.store import FILE_NAME, MIGRATIONS, PAGE_SIZE, CallQuery, Store, StoreError
from tests.conftest import make_config, unique_base

T0 = datetime(2026, 11, 26, 8, 0, 0, 123000, tzinfo=UTC)


def record(
    device: str, minutes: int, result: CallResult = CallResult.ANSWERED, number: str = "555"
) -> CallRecord:
    started = T0 + timedelta(minutes=minutes)
    return CallRecord(
        call_id=f"c{minutes}",
        device=device,
        direction=Direction.INCOMING,
        number=number,
        name="Alice",
        line="100",
        started=started,
        answered=started + timedelta(seconds=5),
        ended=started + timedelta(seconds=65),
        ring_seconds=5.0,
        talk_seconds=60.0,
        result=result,
        name_source="contacts",
    )


def phone_in_a_call() -> Phone:
    call = Call(
        key="c3",
        state=CallState.TALKING,
        direction=Direction.OUTGOING,
        number="+4930123",
        name=None,
        line="100",
        call_id="x@pbx",
        started=T0,
        answered=T0 + timedelta(seconds=3),
        updated=T0 + timedelta(seconds=3),
    )
    return Phone(
        device="001565aabbcc",
        phone_type="yealink",
        hook=Hook.OFF,
        calls=(call,),
        dnd=True,
        lines=(("100", LineState.REGISTERED),),
        model="SIP-T46S",
        ip="192.168.1.50",
        last_seen=T0,
        next_key=4,
    )


def test_a_phone_with_its_active_call_survives_reopening(tmp_path: Path) -> None:
    store = Store(tmp_path)
    phone = phone_in_a_call()
    rec = record("001565aabbcc", 0)
    device = StoredDevice("001565aabbcc", "001565aabbcc", "Front desk", True, T0, True, T0, phone)
    store.save(device, [rec])
    store.close()

    again = Store(tmp_path)
    [(loaded, history)] = again.devices(history_size=20)
    assert loaded.name == "Front desk"
    assert loaded.phone.calls == phone.calls
    assert loaded.phone.last_call == rec
    assert loaded.phone == replace(phone, last_call=rec)
    assert history == [rec]


def test_call_log_queries_newest_first_with_filters(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.save(None, [record("a", m) for m in range(10)] + [record("b", 5, CallResult.MISSED)])
    assert [r.call_id for r in store.calls(CallQuery(device="a", limit=3))] == ["c9", "c8", "c7"]
    assert [r.call_id for r in store.calls(CallQuery(device="a", limit=3, offset=3))] == ["c6", "c5", "c4"]
    assert [r.device for r in store.calls(CallQuery(result="missed"))] == ["b"]
    since = T0 + timedelta(minutes=8, seconds=30)
    assert [r.call_id for r in store.calls(CallQuery(device="a", since=since))] == ["c9", "c8"]
    assert store.count_calls() == 11


def test_restored_records_share_the_values_every_record_of_a_phone_repeats(tmp_path: Path) -> None:
    """10,000 phones with 10 records each are restored at start: one string for a phone's id, line
    and name source, not one per record."""
    store = Store(tmp_path)
    store.save(None, [record("001565aabbcc", m) for m in range(10)])
    history = Store(tmp_path).calls(CallQuery(device="001565aabbcc", limit=20))  # as the restore reads them
    assert len(history) == 10
    for value in ("device", "line", "name_source"):
        assert len({id(getattr(r, value)) for r in history}) == 1, value
    assert [r.call_id for r in history] == [f"c{m}" for m in reversed(range(10))]


def test_retention_prunes_old_records(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.save(None, [record("a", m) for m in range(0, 100, 10)])
    assert store.prune(T0 + timedelta(minutes=45)) == 5
    assert store.count_calls() == 5


def test_outbox_keeps_messages_in_order_until_cleared(tmp_path: Path) -> None:
    store = Store(tmp_path)
    messages = [
        Message("amego/x/event", f"{i}".encode(), False, 1, f"r{i}" if i % 2 else None) for i in range(5)
    ]
    store.save_outbox(messages[:2])
    store.save_outbox(messages[:3])  # the whole queue again: it replaces what was kept
    store.append_outbox(messages[3:])
    store.close()
    again = Store(tmp_path)
    assert again.outbox() == messages
    assert again.outbox() == messages  # read, not taken: a kill before delivery sends it again
    again.clear_outbox()
    assert again.outbox() == []


def test_unannounced_calls_until_the_broker_has_them(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.save(None, [record("a", 1), record("a", 2), record("a", 3)], ["r1", "r2", None])
    assert [(receipt, r.call_id) for receipt, r in store.unannounced()] == [("r1", "c1"), ("r2", "c2")]
    store.announced(["r1"])
    assert [r.call_id for _, r in store.unannounced()] == ["c2"]


def test_a_bridge_clears_receipts_a_batch_a_loop_turn(monkeypatch: pytest.MonkeyPatch) -> None:
    """The receipts the broker acknowledged in a second go to the store ANNOUNCED_BATCH at a time,
    with a loop turn between writes for the hits that came in meanwhile; none is left behind."""
    config = make_config(unique_base(), "mqtt://127.0.0.1:1")
    store = Store(Path(config.storage.dir))
    receipts = [f"r{n}" for n in range(2 * ANNOUNCED_BATCH + 7)]
    store.save(None, [record("a", n) for n in range(len(receipts))], receipts)
    store.close()
    bridge = Bridge(config)
    bridge.open()
    assert bridge.store is not None
    writes: list[tuple[int, int]] = []  # (receipts, loop turns so far)
    turns = 0
    announced = bridge.store.announced

    def counted(batch: Sequence[str]) -> None:
        writes.append((len(batch), turns))
        announced(batch)

    bridge.store.announced = counted  # type: ignore[method-assign,assignment]

    async def main() -> None:
        nonlocal turns
        bridge.keeper.delivered(receipts[:10])
        bridge.keeper.delivered(receipts[10:])
        deadline = asyncio.get_running_loop().time() + 10
        while len(writes) < 3 and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0)
            turns += 1

    monkeypatch.setattr(keeper, "ANNOUNCED_EVERY", 0.01)

    try:
        asyncio.run(main())
        assert [size for size, _ in writes] == [ANNOUNCED_BATCH, ANNOUNCED_BATCH, 7]
        assert writes[0][1] < writes[1][1] < writes[2][1]
        assert bridge.store.unannounced() == []
    finally:
        bridge.close()


def test_migrations_are_applied_once_and_newer_schemas_refused(tmp_path: Path) -> None:
    store = Store(tmp_path)
    assert store.schema_version == len(MIGRATIONS)
    store.close()
    assert Store(tmp_path).schema_version == len(MIGRATIONS)
    db = sqlite3.connect(tmp_path / "amego.sqlite3")
    db.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    db.close()
    with pytest.raises(StoreError, match="newer amego-bridge"):
        Store(tmp_path)


def test_the_calls_command_reads_beside_a_running_bridge_and_leaves_its_wal_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    bridges = Store(data)  # the running bridge's own connection, writing
    bridges.save(None, [record("a", 1), record("a", 2)], [None, None])
    wal = data / "amego.sqlite3-wal"
    before = wal.stat().st_size
    assert before > 0
    config = tmp_path / "config.toml"
    config.write_text(f'[storage]\ndir = "{data}"\n')
    assert main(["calls", "--config", str(config), "--format", "json"]) == 0
    assert [r["call_id"] for r in json.loads(capsys.readouterr().out)] == ["c2", "c1"]
    assert wal.stat().st_size == before  # no checkpoint: the WAL is the bridge's to manage
    bridges.save(None, [record("a", 3)], [None])  # and the bridge writes on as before
    assert wal.stat().st_size > before
    assert [r.call_id for r in bridges.calls(CallQuery())] == ["c3", "c2", "c1"]
    bridges.close()


def test_a_reader_brings_an_older_store_up_to_date_and_refuses_a_newer_one(tmp_path: Path) -> None:
    sqlite3.connect(tmp_path / "amego.sqlite3").close()  # schema 0: no tables yet
    reader = Store.reader(tmp_path)
    assert reader.schema_version == len(MIGRATIONS)
    assert reader.calls(CallQuery()) == []
    reader.close()
    with closing(sqlite3.connect(tmp_path / "amego.sqlite3")) as db:
        db.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    with pytest.raises(StoreError, match="newer amego-bridge"):
        Store.reader(tmp_path)


def test_the_calls_command_says_in_one_line_when_the_store_is_not_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "amego.sqlite3").write_text("not a database\n")
    config = tmp_path / "config.toml"
    config.write_text(f'[storage]\ndir = "{tmp_path}"\n')
    assert main(["calls", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("amego-bridge: storage.dir: cannot read ")
    assert "not a database" in err
    assert len(err.strip().splitlines()) == 1


def test_moving_a_device_moves_its_calls(tmp_path: Path) -> None:
    store = Store(tmp_path)
    phone = Phone(device="ip-10-0-0-5")
    store.save(
        StoredDevice("ip-10-0-0-5", None, "", False, T0, None, None, phone), [record("ip-10-0-0-5", 1)]
    )
    store.rename_device("ip-10-0-0-5", "001565aabbcc")
    assert store.devices(20) == []
    assert [r.device for r in store.calls(CallQuery())] == ["001565aabbcc"]


def wal_file_size(store: Store) -> int:
    return Path(f"{store.path}-wal").stat().st_size


def wal_frames(store: Store) -> int:
    """Frames in use in the store's WAL (SQLite's own count, from a checkpoint that copies them)."""
    with closing(sqlite3.connect(store.path)) as other:
        frames = other.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1]
    return int(frames)


@pytest.mark.parametrize("past_the_limit", [False, True])
def test_a_wal_past_its_limit_starts_over(monkeypatch: pytest.MonkeyPatch, past_the_limit: bool) -> None:
    """Under steady load SQLite never gets to start its WAL over: a write always comes before the
    checkpoint on its own thread is done. Here a reader holds that checkpoint back instead. Past
    WAL_LIMIT, the bridge finishes the checkpoint on the writer's connection, and the next write
    starts the WAL from its beginning; below, the WAL goes on growing, as before."""
    config = make_config(unique_base(), "mqtt://127.0.0.1:1")
    bridge = Bridge(config)
    bridge.open()
    store = bridge.store
    assert store is not None
    phones = [replace(phone_in_a_call(), device=f"0015650000{n:02x}") for n in range(200)]

    def save(phone: Phone) -> None:
        assert store is not None
        store.save(StoredDevice(phone.device, phone.device, "", True, T0, True, T0, phone))

    for phone in phones[:100]:
        save(phone)
    reader = sqlite3.connect(store.path, isolation_level=None, check_same_thread=False)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM devices").fetchall()  # its snapshot: the first 100
    for phone in phones[100:]:
        save(phone)
    checkpoint = store.checkpoint

    def held_back() -> int:
        left = checkpoint()  # copies no further than the reader's snapshot
        reader.execute("COMMIT")
        return left

    monkeypatch.setattr(store, "checkpoint", held_back)
    grown = wal_file_size(store)
    monkeypatch.setattr("bridge.keeper.WAL_LIMIT", grown - 1 if past_the_limit else grown + 1)
    try:
        asyncio.run(bridge.keeper.checkpoint())
        save(replace(phones[0], next_key=99))  # a change: a row written as it was costs no frame
        frames = wal_frames(store)
        if past_the_limit:
            assert frames < 10  # started over: this one write's pages
            assert wal_file_size(store) == grown  # the file is written again, not grown
        else:
            assert frames > 200
    finally:
        reader.close()
        bridge.close()
    again = Store(Path(config.storage.dir))
    try:
        assert sorted(stored.id for stored, _ in again.devices(10)) == sorted(p.device for p in phones)
    finally:
        again.close()


def test_what_a_bridge_restores_is_left_alone_by_the_garbage_collector() -> None:
    """Restored phones live as long as the bridge: each full collection walked them all, on the
    loop (63-83 ms for 10,000). `open` freezes them (gc.freeze) once restored."""
    config = make_config(unique_base(), "mqtt://127.0.0.1:1")
    store = Store(Path(config.storage.dir))
    phones = [replace(phone_in_a_call(), device=f"0015650001{n:02x}") for n in range(50)]
    for phone in phones:
        store.save(StoredDevice(phone.device, phone.device, "", True, T0, True, T0, phone))
    store.close()
    frozen_before = gc.get_freeze_count()
    bridge = Bridge(config)
    bridge.open()
    try:
        restored = list(bridge.devices.values())
        assert len(restored) == 50
        assert gc.get_freeze_count() >= frozen_before + 50
        tracked = {id(o) for o in gc.get_objects()}
        assert not any(id(device) in tracked for device in restored)
    finally:
        bridge.close()
        gc.unfreeze()  # the rest of the test run collects as usual


def test_a_new_store_has_small_pages_and_an_old_one_keeps_its_own(tmp_path: Path) -> None:
    """Each hit's commit appends a page to the WAL, and the checkpoint syncs what piled up while
    the loop goes on writing: a new store's pages are 1 kB (SQLite's default is 4). A store made
    before keeps its page size, and its contents."""
    new = Store(tmp_path / "new")
    new.save(None, [record("a", 1)])
    new.close()
    with closing(sqlite3.connect(tmp_path / "new" / "amego.sqlite3")) as db:
        assert db.execute("PRAGMA page_size").fetchone()[0] == 1024
    (tmp_path / "old").mkdir()
    with closing(sqlite3.connect(tmp_path / "old" / "amego.sqlite3")) as db:
        db.execute("PRAGMA page_size=4096")
        db.execute("PRAGMA journal_mode=WAL")
        db.executescript(f"BEGIN;\n{MIGRATIONS[0]}\nPRAGMA user_version = 1;\nCOMMIT;")
    old = Store(tmp_path / "old")
    old.save(None, [record("a", 2)])
    old.close()
    with closing(sqlite3.connect(tmp_path / "old" / "amego.sqlite3")) as db:
        assert db.execute("PRAGMA page_size").fetchone()[0] == 4096
    assert [r.call_id for r in Store(tmp_path / "old").calls(CallQuery())] == ["c2"]


CLOSE_DURING_CHECKPOINT = """
import sys, threading
from pathlib import Path
from bridge.store import Store
store = Store(Path(sys.argv[1]))
store.checkpoint()  # its own connection is open from now on, as in a running bridge
for n in range(40):
    store.set_meta(f"k{n}", "x" * 1_000_000)  # 40 MB of WAL: the next checkpoint takes a while
began = threading.Event()
def checkpoint():
    began.set()
    store.checkpoint()
thread = threading.Thread(target=checkpoint)
thread.start()
began.wait()
store.close()  # as the bridge stops, while its timers' checkpoint is still running
thread.join()
print("closed")
"""


def test_a_store_closed_while_its_checkpoint_runs_waits_for_it(tmp_path: Path) -> None:
    """The checkpoint's connection was closed under it: SQLite crashed the bridge (SIGSEGV) at a
    stop that came during a checkpoint, every time (three suite runs of five met it)."""
    done = subprocess.run(
        [sys.executable, "-c", CLOSE_DURING_CHECKPOINT, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).parent.parent,
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, "closed\n", "")
    with closing(sqlite3.connect(tmp_path / "amego.sqlite3")) as db:
        assert db.execute("SELECT count(*) FROM meta WHERE key LIKE 'k%'").fetchone() == (40,)  # all kept


def leaf_of(path: Path, table: str) -> int:
    """A leaf page from the middle of `table`'s b-tree, found by walking down from its root
    (SQLite's file format: an interior table page is type 5, a leaf 13; each interior cell starts
    with its left child's page number)."""
    data = path.read_bytes()
    with closing(sqlite3.connect(path)) as db:
        page, size = db.execute(
            "SELECT rootpage, (SELECT page_size FROM pragma_page_size) FROM sqlite_master WHERE name = ?",
            (table,),
        ).fetchone()
    while data[(page - 1) * size] != 13:
        at = (page - 1) * size
        assert data[at] == 5, data[at]
        cells = int.from_bytes(data[at + 3 : at + 5], "big")
        middle = at + 12 + 2 * (cells // 2)
        cell = at + int.from_bytes(data[middle : middle + 2], "big")
        page = int.from_bytes(data[cell : cell + 4], "big")
    return int(page)


def test_what_can_be_read_of_a_damaged_store_is_taken_in_by_a_new_one(tmp_path: Path) -> None:
    """A damaged page costs its own rows and a few more; the rows before and after it are read."""
    old = Store(tmp_path / "old")
    phone = phone_in_a_call()
    device = StoredDevice(phone.device, phone.device, "Front desk", True, T0, True, T0, phone)
    records = [record(phone.device, minutes) for minutes in range(3000)]
    old.save(
        device, records, [f"r{n}" if n >= 2990 else None for n in range(3000)]
    )  # the last 10 unannounced
    old.save_outbox([Message("a/b", b"{}", False, 1, None)])
    old.set_meta("clean_stop", "0")
    old.close()
    path = tmp_path / "old" / FILE_NAME
    page = leaf_of(path, "calls")
    with path.open("r+b") as file:
        file.seek((page - 1) * PAGE_SIZE)
        file.write(b"\xff" * PAGE_SIZE)
    with closing(sqlite3.connect(path)) as db, pytest.raises(sqlite3.DatabaseError, match="malformed"):
        db.execute("SELECT * FROM calls").fetchall()

    found = salvage(path)
    assert found.unreadable == 1
    read = [row[1] for row in found.rows["calls"]]  # call ids, in the order stored
    assert 3000 - 40 <= len(read) < 3000, len(read)
    assert read == [rec.call_id for rec in records if rec.call_id in set(read)]
    assert (read[0], read[-1]) == ("c0", "c2999")

    new = Store(tmp_path / "new")
    new.take_in(found)
    assert new.count_calls() == len(read)
    [(restored, history)] = new.devices(history_size=20)
    assert (restored.name, restored.phone.calls) == ("Front desk", phone.calls)
    assert [rec.call_id for rec in history] == [f"c{n}" for n in range(2999, 2979, -1)]
    assert [receipt for receipt, _ in new.unannounced()] == [f"r{n}" for n in range(2990, 3000)]
    assert new.outbox() == [Message("a/b", b"{}", False, 1, None)]
    assert new.meta("clean_stop") == "0"
    new.close()
