"""SQLite store: call records, phones (learned devices with their active calls), the MQTT outbox.

One connection, WAL, `synchronous=NORMAL`: a commit reaches the OS before the hit is answered,
so a killed bridge (kill -9) loses nothing it answered 200; only a power cut can lose the last
few commits. Small per-hit writes run on the loop thread (tens of microseconds); bulk work
(retention, queries over many records) is meant to run in a thread via `asyncio.to_thread`.
"""

import contextlib
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from bridge.calls import CallRecord
from bridge.mqtt import Message
from bridge.rows import (
    CLEAN_STOP,
    RECORD_COLUMNS,
    StoredDevice,
    device_row,
    from_text,
    phone_from_json,
    record,
    record_row,
    to_text,
)
from bridge.salvage import SALVAGED, Salvage

FILE_NAME = "amego.sqlite3"
WAL_HEADER, WAL_FRAME_HEADER = 32, 24  # bytes (SQLite's file format: the WAL file)
PAGE_SIZE = 1024  # bytes, for a new store (`Store.__init__`)

# Each migration takes the schema from its index to the next version. Never edit one that shipped.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE calls (
        id INTEGER PRIMARY KEY,
        device TEXT NOT NULL,
        call_id TEXT,
        direction TEXT,
        number TEXT,
        name TEXT,
        name_source TEXT,
        line TEXT,
        started TEXT NOT NULL,
        answered TEXT,
        ended TEXT NOT NULL,
        ring_seconds REAL NOT NULL,
        talk_seconds REAL NOT NULL,
        result TEXT NOT NULL,
        receipt TEXT  -- set while the call's call_ended message has not reached the broker
    );
    CREATE INDEX calls_by_device ON calls (device, ended);
    CREATE INDEX calls_by_time ON calls (ended);
    CREATE INDEX calls_unannounced ON calls (receipt) WHERE receipt IS NOT NULL;
    CREATE TABLE devices (
        id TEXT PRIMARY KEY,
        mac TEXT,
        name TEXT NOT NULL DEFAULT '',
        mac_resolved INTEGER NOT NULL,
        first_seen TEXT,
        online INTEGER,
        call_updated TEXT,
        phone TEXT NOT NULL
    );
    CREATE TABLE outbox (
        seq INTEGER PRIMARY KEY,
        topic TEXT NOT NULL,
        payload BLOB NOT NULL,
        retain INTEGER NOT NULL,
        qos INTEGER NOT NULL,
        receipt TEXT
    );
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    """,
)


class StoreError(Exception):
    """The store cannot be opened or is from a newer version of the bridge."""


class StoreCorrupt(StoreError):
    """The store's file is not a SQLite database, or SQLite finds it damaged."""


def corrupt(err: sqlite3.Error) -> bool:
    """Whether SQLite says the file is damaged (SQLITE_CORRUPT, its variants) or not a database."""
    name = getattr(err, "sqlite_errorname", "")
    return name.startswith("SQLITE_CORRUPT") or name == "SQLITE_NOTADB"


@dataclass(frozen=True, slots=True)
class CallQuery:
    device: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    result: str | None = None
    limit: int = 100
    offset: int = 0


_INSERT_CALL = f"INSERT INTO calls ({RECORD_COLUMNS}, receipt) VALUES ({', '.join('?' * 14)})"
# An upsert, not INSERT OR REPLACE: the row keeps its rowid, so the primary key's index is left
# alone and a hit's commit writes half the pages (18 against 37 µs a save, bench/README.md).
_SAVE_DEVICE = (
    "INSERT INTO devices (id, mac, name, mac_resolved, first_seen, online, call_updated, phone) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET mac = excluded.mac, "
    "name = excluded.name, mac_resolved = excluded.mac_resolved, first_seen = excluded.first_seen, "
    "online = excluded.online, call_updated = excluded.call_updated, phone = excluded.phone"
)


# ---- the store --------------------------------------------------------------------------------


class Store:
    def __init__(self, directory: Path, read_only: bool = False) -> None:
        """`read_only`: see `reader`."""
        self._read_only = read_only
        self._checkpointer: sqlite3.Connection | None = None
        # Held while a checkpoint runs on its thread, and by `close` before it closes that
        # connection: closed under a running checkpoint, SQLite crashed the process (SIGSEGV).
        self._checkpointing = threading.Lock()
        self._closed = False
        if read_only:
            self.path = directory / FILE_NAME
            try:
                uri = f"{self.path.resolve().as_uri()}?mode=ro"
                self._db = sqlite3.connect(uri, uri=True, check_same_thread=False, isolation_level=None)
                version = self.schema_version
            except sqlite3.Error as err:
                raise StoreError(f"storage.dir: cannot read {self.path}: {err}") from err
            self._lock = threading.Lock()
            self._page_size = 0  # for checkpoints, which it never runs
            self._refuse_newer(version)
            return
        try:
            directory.mkdir(parents=True, exist_ok=True)
            self.path = directory / FILE_NAME
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        except (OSError, sqlite3.Error) as err:
            raise StoreError(f"storage.dir: cannot open {directory}: {err}") from err
        self._lock = threading.Lock()  # the loop thread and to_thread() workers share one connection
        try:
            self._set_up()
        except sqlite3.Error as err:
            self._db.close()
            if corrupt(err):
                raise StoreCorrupt(f"{self.path}: {err}") from err
            raise StoreError(f"storage.dir: cannot open {self.path}: {err}") from err

    def _set_up(self) -> None:
        # Pages of 1 kB for a new store (an existing one keeps its own; README, "Reliability"). Each
        # hit's commit appends its phone's page to the WAL, and the checkpoint every 5 s syncs
        # what piled up: 5 kB a hit with SQLite's default 4 kB pages. While that sync ran, the
        # loop's next writes to the WAL waited, and the p99 at 1,000 hits/s went with it (median
        # 4.7 against 3.4 ms over 4 runs each, bench/README.md).
        self._db.execute(f"PRAGMA page_size={PAGE_SIZE}")
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        # No checkpoint inside a hit's commit (it can take tens of milliseconds): `checkpoint()`
        # runs them from a thread, on a connection of its own, so writers are not held up.
        self._db.execute("PRAGMA wal_autocheckpoint=0")
        self._page_size = int(self._db.execute("PRAGMA page_size").fetchone()[0])
        self.migrate()

    @classmethod
    def reader(cls, directory: Path) -> "Store":
        """The store opened to read beside a bridge that may be writing to it (the `calls`
        subcommand): it never writes and never checkpoints, and closing it leaves the WAL to the
        bridge. A writer's close checkpoints with TRUNCATE, which holds up a running bridge's
        writes, and so its loop, while it copies and syncs. A store with an older schema than
        this version's is brought up to date first, as the bridge does when it starts."""
        store = cls(directory, read_only=True)
        if store.schema_version == len(MIGRATIONS):
            return store
        store.close()
        return cls(directory)

    def _refuse_newer(self, version: int) -> None:
        if version > len(MIGRATIONS):
            self._db.close()
            raise StoreError(
                f"{self.path} is from a newer amego-bridge (schema {version}, this one knows "
                f"{len(MIGRATIONS)}); upgrade the bridge or move the file away"
            )

    def migrate(self) -> None:
        version = self.schema_version
        self._refuse_newer(version)
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            with self._lock:
                self._db.executescript(f"BEGIN;\n{script}\nPRAGMA user_version = {number};\nCOMMIT;")

    @property
    def schema_version(self) -> int:
        return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    def check(self) -> None:
        """SQLite's quick check of the whole file (55 ms for 10,000 phones with 100,000 calls):
        StoreCorrupt when it finds damage."""
        try:
            with self._lock:
                found = self._db.execute("PRAGMA quick_check(1)").fetchone()[0]
        except sqlite3.Error as err:
            if corrupt(err):
                raise StoreCorrupt(f"{self.path}: {err}") from err
            raise
        if found != "ok":
            raise StoreCorrupt(f"{self.path}: {' '.join(str(found).split())}")

    def checkpoint(self) -> int:
        """Copy the WAL into the database (PASSIVE: never waits for, nor blocks, the writer). The
        bytes of WAL it left behind, when writes came in meanwhile (else 0: the next write starts
        the WAL over). Meant for a thread (`asyncio.to_thread`); 0 once the store is closed."""
        with self._checkpointing:
            if self._closed:
                return 0
            if self._checkpointer is None:
                self._checkpointer = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            _busy, frames, copied = self._checkpointer.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        if frames <= copied:
            return 0
        return WAL_HEADER + int(frames) * (self._page_size + WAL_FRAME_HEADER)

    def restart_wal(self) -> None:
        """Copy what is left of the WAL into the database, on the writer's own connection (no write
        can come in between), so that the next write starts the WAL over from its beginning. The
        file keeps its size, to be written again: emptying it (TRUNCATE) took 36 ms at 64 MB."""
        with self._lock:
            self._db.execute("PRAGMA wal_checkpoint(RESTART)")

    def close(self, checkpoint: bool = True) -> None:
        """Close the store. A checkpoint running on its thread is waited for: a PASSIVE one copies
        at most the WAL (`WAL_LIMIT` and what came since, bench/README.md). Without `checkpoint`,
        the file is left as it is (a damaged one, to be set aside)."""
        if self._read_only:
            self._db.close()
            return
        with self._checkpointing:
            self._closed = True
            if self._checkpointer is not None:
                self._checkpointer.close()
        with self._lock:
            try:
                if checkpoint:  # on a full disk it cannot: the WAL stays, and the next start reads it
                    with contextlib.suppress(sqlite3.Error):
                        self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                self._db.close()

    # ---- the per-hit write ----------------------------------------------------------------------

    def save(
        self,
        device: StoredDevice | None,
        records: Sequence[CallRecord] = (),
        receipts: Sequence[str | None] = (),
    ) -> None:
        """One transaction: a phone's state and the calls that just ended, each with the receipt of
        its call_ended message (None: nothing to announce)."""
        rows = [
            (*record_row(r), receipt)
            for r, receipt in zip(records, receipts or [None] * len(records), strict=True)
        ]
        values = None if device is None else device_row(device)
        if values is not None and not rows:  # most hits: one statement is its own transaction
            with self._lock:
                self._db.execute(_SAVE_DEVICE, values)
            return
        with self._transaction():
            if values is not None:
                self._db.execute(_SAVE_DEVICE, values)
            if rows:
                self._db.executemany(_INSERT_CALL, rows)

    def fill(
        self, phones: Iterable[tuple[StoredDevice, Sequence[CallRecord]]], outbox: Sequence[Message]
    ) -> None:
        """A new store given what a running bridge holds (`Keeper`'s start over): its phones, each
        with its history, newest first, and its MQTT queue. One transaction."""
        with self._transaction():
            for device, history in phones:
                self._db.execute(_SAVE_DEVICE, device_row(device))
                self._db.executemany(_INSERT_CALL, [(*record_row(r), None) for r in reversed(history)])
            self._add_outbox(outbox)

    def take_in(self, found: Salvage) -> None:
        """What could be read of a damaged store, in one transaction: its phones, calls and outbox,
        and whether the bridge on it was stopped cleanly."""
        with self._transaction():
            self._db.executemany(
                f"INSERT OR IGNORE INTO devices ({SALVAGED['devices']}) VALUES ({', '.join('?' * 8)})",
                found.rows["devices"],
            )
            self._db.executemany(_INSERT_CALL, found.rows["calls"])
            self._db.executemany(
                f"INSERT INTO outbox ({SALVAGED['outbox']}) VALUES (?, ?, ?, ?, ?)", found.rows["outbox"]
            )
            if found.clean_stop is not None:
                self._db.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (CLEAN_STOP, found.clean_stop)
                )

    def take_in_calls(self, rows: Iterable[tuple[object, ...]]) -> None:
        """Call records read from a damaged store (`Salvage.rows["calls"]`), in one transaction."""
        with self._transaction():
            self._db.executemany(_INSERT_CALL, rows)

    def announced(self, receipts: Sequence[str]) -> None:
        """The broker has the call_ended messages with these receipts (one transaction)."""
        with self._transaction():
            rows = [(receipt,) for receipt in receipts]
            self._db.executemany("UPDATE calls SET receipt = NULL WHERE receipt = ?", rows)

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """The store's lock, and one transaction: committed, or rolled back when anything fails."""
        with self._lock:
            self._db.execute("BEGIN")
            try:
                yield
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def unannounced(self, limit: int = 10_000) -> list[tuple[str, CallRecord]]:
        """Calls whose call_ended never reached the broker, oldest first, with their receipts."""
        with self._lock:
            rows = self._db.execute(
                f"SELECT receipt, {RECORD_COLUMNS} FROM calls WHERE receipt IS NOT NULL ORDER BY id LIMIT ?",
                (limit,),
            ).fetchall()
        return [(str(row[0]), record(row[1:])) for row in rows]

    def delete_device(self, device_id: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM devices WHERE id = ?", (device_id,))

    def rename_device(self, old_id: str, new_id: str) -> None:
        """A phone known by its address is now known by its MAC: its calls move with it."""
        with self._transaction():
            self._db.execute("DELETE FROM devices WHERE id = ?", (old_id,))
            self._db.execute("UPDATE calls SET device = ? WHERE device = ?", (new_id, old_id))

    # ---- reading ----------------------------------------------------------------------------------

    def devices(self, history_size: int) -> list[tuple[StoredDevice, list[CallRecord]]]:
        """Every stored phone with its last `history_size` calls, newest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, mac, name, mac_resolved, first_seen, online, call_updated, phone FROM devices"
            ).fetchall()
        out = []
        for id_, mac, name, resolved, first_seen, online, call_updated, phone in rows:
            history = self.calls(CallQuery(device=id_, limit=history_size))
            out.append(
                (
                    StoredDevice(
                        id=id_,
                        mac=mac,
                        name=name,
                        mac_resolved=bool(resolved),
                        first_seen=from_text(first_seen),
                        online=None if online is None else bool(online),
                        call_updated=from_text(call_updated),
                        phone=phone_from_json(phone, history[0] if history else None),
                    ),
                    history,
                )
            )
        return out

    def calls(self, query: CallQuery) -> list[CallRecord]:
        """Call records, newest first."""
        where: list[str] = []
        args: list[object] = []
        if query.device is not None:
            where.append("device = ?")
            args.append(query.device)
        if query.since is not None:
            where.append("ended >= ?")
            args.append(to_text(query.since))
        if query.until is not None:
            where.append("ended < ?")
            args.append(to_text(query.until))
        if query.result is not None:
            where.append("result = ?")
            args.append(query.result)
        sql = f"SELECT {RECORD_COLUMNS} FROM calls"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY ended DESC, id DESC LIMIT ? OFFSET ?"
        with self._lock:
            rows = self._db.execute(sql, (*args, query.limit, query.offset)).fetchall()
        return [record(row) for row in rows]

    def count_calls(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM calls").fetchone()[0])

    def prune(self, before: datetime) -> int:
        """Delete call records that ended before `before` (retention); returns how many."""
        with self._lock:
            cursor = self._db.execute("DELETE FROM calls WHERE ended < ?", (to_text(before),))
            return cursor.rowcount

    # ---- MQTT messages that outlive the process -----------------------------------------------------

    def save_outbox(self, messages: Sequence[Message]) -> None:
        """The outbox is `messages`, in order, and nothing else."""
        with self._transaction():
            self._db.execute("DELETE FROM outbox")
            self._add_outbox(messages)

    def append_outbox(self, messages: Sequence[Message]) -> None:
        """`messages` after those the outbox holds (one transaction)."""
        with self._transaction():
            self._add_outbox(messages)

    def clear_outbox(self) -> None:
        with self._lock:
            self._db.execute("DELETE FROM outbox")

    def _add_outbox(self, messages: Sequence[Message]) -> None:
        self._db.executemany(
            "INSERT INTO outbox (topic, payload, retain, qos, receipt) VALUES (?, ?, ?, ?, ?)",
            [(m.topic, m.payload, int(m.retain), m.qos, m.receipt) for m in messages],
        )

    def outbox(self) -> list[Message]:
        """The messages kept, in order: at the last stop, or while the broker was away."""
        with self._lock:
            rows = self._db.execute(
                "SELECT topic, payload, retain, qos, receipt FROM outbox ORDER BY seq"
            ).fetchall()
        return [Message(t, bytes(p), bool(r), int(q), receipt) for t, p, r, q, receipt in rows]

    def set_meta(self, key: str, value: str) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def meta(self, key: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return str(row[0]) if row else None
