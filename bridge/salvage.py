"""A damaged store: set aside as it was, and what SQLite can still read of it."""

import contextlib
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from bridge.calls import CallRecord
from bridge.rows import CLEAN_STOP, RECORD_COLUMNS, to_text


def set_aside(path: Path, when: datetime) -> Path:
    """Move a damaged store's file out of the way, with its WAL, as `<name>.corrupt-<UTC time>`
    (and `-wal`): kept as they were, for whoever wants to recover what they hold. The new name."""
    moved = path.with_name(f"{path.name}.corrupt-{when.astimezone(UTC):%Y%m%dT%H%M%SZ}")
    for suffix in ("", "-wal", "-shm"):
        source = Path(f"{path}{suffix}")
        if source.exists():
            source.rename(f"{moved}{suffix}")
    return moved


# Rows read from a damaged store a query at a time (`salvage`).
SALVAGE_RANGE = 1000
# How far to look, in rowids, in a table whose last rowid cannot be read.
SALVAGE_REACH = 10_000_000
SALVAGED = {
    "devices": "id, mac, name, mac_resolved, first_seen, online, call_updated, phone",
    "calls": f"{RECORD_COLUMNS}, receipt",
    "outbox": "topic, payload, retain, qos, receipt",
}


@dataclass
class Salvage:
    """What could still be read of a damaged store: its rows, table by table (`SALVAGED`)."""

    rows: dict[str, list[tuple[object, ...]]]
    unreadable: int  # stretches of rows that could not be read, a whole table counting as one
    clean_stop: str | None

    @classmethod
    def nothing(cls) -> "Salvage":
        return cls({table: [] for table in SALVAGED}, 0, None)

    def older_calls(self, known: Iterable[CallRecord]) -> list[tuple[object, ...]]:
        """Its call rows but for those of `known` (what a running bridge holds)."""
        held = {(rec.device, rec.call_id, to_text(rec.started)) for rec in known}
        # A row's device, call_id and started, in the order of RECORD_COLUMNS.
        return [row for row in self.rows["calls"] if (row[0], row[1], row[7]) not in held]


def salvage(path: Path) -> Salvage:
    """The rows of a damaged store (set aside: opened read-only, left as it was) that SQLite can
    still read, each table a range of rowids at a time."""
    rows: dict[str, list[tuple[object, ...]]] = {table: [] for table in SALVAGED}
    unreadable = 0
    clean_stop = None
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error:
        return Salvage(rows, len(SALVAGED), None)  # every table unreadable
    with contextlib.closing(db):
        for table, columns in SALVAGED.items():
            unreadable += _salvage_table(db, table, columns, rows[table])
        with contextlib.suppress(sqlite3.Error):
            found = db.execute("SELECT value FROM meta WHERE key = ?", (CLEAN_STOP,)).fetchone()
            clean_stop = str(found[0]) if found else None
    return Salvage(rows, unreadable, clean_stop)


def _salvage_table(db: sqlite3.Connection, table: str, columns: str, into: list[tuple[object, ...]]) -> int:
    """`into` gets what can be read of `table`, SALVAGE_RANGE rows a query; the stretches of rowids
    that cannot be read are counted. Past one, the next readable row is looked for 1, 2, 4, ...
    rowids further on, so a damaged page costs its own rows and about as many again."""
    try:
        last = db.execute(f"SELECT max(rowid) FROM {table}").fetchone()[0]
        if last is None:
            return 0  # empty
    except sqlite3.Error:
        last = None
    after, step, unreadable, failing = 0, 1, 0, False
    while after < (SALVAGE_REACH if last is None else last):
        try:
            cursor = db.execute(
                f"SELECT rowid, {columns} FROM {table} WHERE rowid > ? ORDER BY rowid LIMIT ?",
                (after, SALVAGE_RANGE),
            )
            read = 0
            for row in cursor:
                after, read = row[0], read + 1
                into.append(row[1:])
            failing, step = False, 1
            if read < SALVAGE_RANGE:
                break  # the end of the table
        except sqlite3.Error:
            if last is None and not into and after == 0:
                return 1  # neither its first rows nor its last: nothing of it can be read
            if not failing:
                unreadable += 1
            failing = True
            after, step = after + step, step * 2
    return unreadable
