"""The store as the bridge keeps it: opened (a damaged one set aside), told once when it cannot
write, the MQTT queue kept while the broker is away, delivered receipts cleared, and a stop told
from a kill at the next start."""

import asyncio
import logging
import shutil
import sqlite3
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import TypeVar

from bridge.calls import CallRecord
from bridge.mqtt import Message
from bridge.registry import Device
from bridge.rows import CLEAN_STOP, StoredDevice
from bridge.salvage import Salvage, salvage, set_aside
from bridge.store import FILE_NAME, Store, StoreCorrupt, StoreError, corrupt

log = logging.getLogger(__name__)
T = TypeVar("T")

CHECKPOINT_EVERY = 5.0  # seconds between copies of the store's WAL into its database
WAL_LIMIT = 16 * 1024 * 1024  # bytes of WAL past which a checkpoint finishes on the loop (`checkpoint`)
# Seconds the receipts of acknowledged call_ended messages gather before the store clears them in
# one write (a write per batch of PUBACKs cost 2-3 % of a hit). After a kill -9, the call_ended of
# at most the last second may go out again: delivery is at least once.
ANNOUNCED_EVERY = 1.0
# Receipts cleared in one write, the rest a loop turn later: the 200 a second of 1,000 hits/s held
# the loop for 5-7 ms in one write, and every hit that came in meanwhile waited.
ANNOUNCED_BATCH = 50
# A store found damaged while the bridge runs is started over at most this often; in between, its
# writes fail as on a full disk. A disk that keeps damaging files would otherwise have the bridge
# write a copy of everything it holds for every damaged page it reads.
START_OVER_EVERY = timedelta(hours=1)

Kept = list[tuple[StoredDevice, list[CallRecord]]]  # the phones a store kept, with their histories
# What the bridge holds, for a new store: its phones, each with its history (newest first), and
# its MQTT queue.
Held = tuple[Sequence[tuple[StoredDevice, Sequence[CallRecord]]], Sequence[Message]]


def unreadable(found: Salvage) -> str:
    """For a log line: the stretches of rows SQLite could not read in a damaged store."""
    return f"; stretches of rows that could not be read: {found.unreadable}" if found.unreadable else ""


class StoreHealth:
    """Whether the store takes writes, told once when it stops and once when it takes them again.

    A store that cannot write (a full disk, say) refuses every hit that changes a phone with a
    `503`, each with its own refusal line; a log line with the error for each of them as well
    would say the same thing a thousand times."""

    def __init__(self, on_change: Callable[[], None] = lambda: None) -> None:
        self.on_change = on_change  # writes began to fail, or work again
        self.error: str | None = None  # the last write's error, while writes fail
        self.failures = 0  # writes failed since writes began to fail
        self.checkpoint_error: str | None = None

    def failed(self, err: sqlite3.Error, what: str) -> None:
        first = self.error is None
        if first:
            log.error(
                "storage: cannot write %s (%s); hits that change a phone get 503 until it can%s",
                what, err, "; restart the bridge to set the damaged store aside" if corrupt(err) else "",
            )  # fmt: skip
        self.error = str(err)
        self.failures += 1
        if first:
            self.on_change()

    def wrote(self) -> None:
        if self.error is not None:
            log.warning("storage: writing again, after %d failed writes (%s)", self.failures, self.error)
            self.error, self.failures = None, 0
            self.on_change()

    def checkpoint(self, err: sqlite3.Error | None) -> None:
        """A checkpoint's outcome: None when it ran."""
        if err is not None and self.checkpoint_error is None:
            log.error("storage: cannot copy the write-ahead log into the database (%s)", err)
        elif err is None and self.checkpoint_error is not None:
            log.warning("storage: the write-ahead log is copied into the database again")
        self.checkpoint_error = None if err is None else str(err)


class Keeper:
    """The bridge's store, once `open`: None before, and after `close`."""

    def __init__(
        self,
        directory: Path,
        history_size: int,
        clock: Callable[[], datetime],
        held: Callable[[], Held],
        on_health_change: Callable[[], None] = lambda: None,
    ) -> None:
        self.directory = directory
        self.history_size = history_size
        self.clock = clock
        self.held = held  # for a store started over while the bridge runs
        self.on_health_change = on_health_change  # the store stopped or started taking writes
        self.store: Store | None = None
        self.health = StoreHealth(self._health_changed)
        self._unmarked = False  # the store does not say yet that a bridge runs on it (a full disk)
        self._outbox_kept = False  # the outbox holds messages that may not be delivered yet
        self._announced: list[str] = []  # receipts acknowledged by the broker, not yet cleared
        self._announce_due: asyncio.Handle | None = None
        self._started_over: datetime | None = None  # when a damaged store was last started over

    # ---- start and stop -------------------------------------------------------------------------

    def open(self) -> tuple[Store, Kept]:
        """The store, and the phones it kept. A damaged store is set aside, kept as it was, and a
        new one started with what SQLite can still read of it: the bridge runs on, and the phones
        that could not be read come back with their next hits (as Home Assistant's recorder
        starts a new database in place of a damaged one)."""
        directory, path = self.directory, self.directory / FILE_NAME
        try:
            store = Store(directory)
            try:
                store.check()
                kept = store.devices(self.history_size)
            except BaseException:
                store.close(checkpoint=False)
                raise
            self.store = store
            return store, kept
        except sqlite3.Error as err:  # reading what it kept
            if not corrupt(err):
                raise StoreError(f"storage.dir: cannot read {path}: {err}") from err
            damage = f"{path}: {err}"
        except StoreCorrupt as err:
            damage = str(err)  # it names the file
        try:
            moved = set_aside(path, self.clock())
        except OSError as err:
            raise StoreError(f"storage.dir: {damage}, and it cannot be set aside: {err}") from err
        store = Store(directory)
        found = salvage(moved)
        try:
            store.take_in(found)
        except sqlite3.Error as err:  # a full disk, say: the bridge starts without it
            log.error("storage: what could be read of %s cannot be kept (%s)", moved.name, err)
            found = Salvage.nothing()
        log.error(
            "storage: %s; set aside as %s, and a new store started with what could still be read "
            "of it (phones: %d, calls: %d%s); other phones come back with their next hits",
            damage, moved.name, len(found.rows["devices"]), len(found.rows["calls"]), unreadable(found),
        )  # fmt: skip
        self.store = store
        return store, store.devices(self.history_size)

    def killed(self) -> bool:
        """Whether the last bridge on this store was killed rather than stopped."""
        return self.store is not None and self.store.meta(CLEAN_STOP) == "0"

    def mark_running(self) -> None:
        """Mark the store as in use, so that a kill is told from a stop at the next start. A full
        disk does not keep the bridge from starting: the mark is written once it takes writes."""
        self._unmarked = True
        self._mark()

    def _mark(self) -> None:
        if self.store is None or not self._unmarked:
            return
        # When it cannot, again once the store takes writes (`_health_changed`).
        if self.attempt("the mark of a running bridge", lambda store: store.set_meta(CLEAN_STOP, "0")):
            self._unmarked = False

    def _health_changed(self) -> None:
        if self.health.error is None:
            self._mark()
        self.on_health_change()

    def close(self, pending: list[Message] | None) -> None:
        """After the link's last flush: keep what it could not deliver (`pending`, None without a
        link) for the next start, and mark the store as stopped cleanly."""
        store, self.store = self.store, None
        if store is None:
            return
        self._clear_announced(store)
        try:
            if pending is not None:
                try:
                    store.save_outbox(pending)
                except sqlite3.Error as err:
                    log.error("stopping: %d undelivered MQTT messages cannot be kept (%s)", len(pending), err)
                    raise
                if pending:
                    log.warning(
                        "stopping with %d MQTT messages undelivered; they go out on the next start",
                        len(pending),
                    )
            # Not marked when anything above failed: the next start then rebuilds, from the
            # calls' receipts, the call_ended events the broker never acknowledged.
            store.set_meta(CLEAN_STOP, "1")
        except sqlite3.Error as err:
            log.error("storage: not marked as stopped cleanly (%s)", err)
        finally:
            store.close()

    # ---- the queue, kept while the broker is away -------------------------------------------------
    # While connected, the broker acknowledges a hit's messages within milliseconds, and a kill
    # loses at most those in flight (the call_ended among them are rebuilt from the store). While
    # the broker is away, the queue is kept in the store's outbox as well, a write for each batch
    # queued, so that a kill then loses none of it; once all of it is acknowledged, it is cleared.

    def keep_queue(self, messages: Sequence[Message], whole: bool = True) -> None:
        """`messages` in the outbox: the whole queue, or (not `whole`) those just queued."""
        if self.store is None:
            return

        def keep(store: Store) -> None:
            (store.save_outbox if whole else store.append_outbox)(messages)

        if self.attempt("the MQTT queue while the broker is away", keep):
            self._outbox_kept = True

    def queued_away(self, messages: Sequence[Message]) -> None:
        self.keep_queue(messages, whole=False)

    def queue_emptied(self) -> None:
        """Everything queued is acknowledged: what the outbox kept is delivered."""
        if not self._outbox_kept or self.store is None:
            return
        # When it cannot, what was delivered goes out again after a kill: no more.
        if self.attempt("the clearing of the delivered MQTT queue", Store.clear_outbox):
            self._outbox_kept = False

    def outbox(self) -> list[Message]:
        """What the last run could not deliver. It stays in the store until the broker has it all
        (`queue_emptied`): a kill before then sends it again, never loses it."""
        if self.store is None:
            return []
        kept = self.store.outbox()
        self._outbox_kept = bool(kept)
        return kept

    # ---- receipts of delivered call_ended events ------------------------------------------------

    def delivered(self, receipts: list[str]) -> None:
        if self.store is None:
            return
        self._announced += receipts
        if self._announce_due is None:
            self._announce_due = asyncio.get_running_loop().call_later(ANNOUNCED_EVERY, self._clear_announced)

    def _clear_announced(self, closing: Store | None = None) -> None:
        """ANNOUNCED_BATCH receipts, and the next batch on the next loop turn; all of them on the
        store `closing`."""
        if self._announce_due is not None:
            self._announce_due.cancel()
            self._announce_due = None
        take = len(self._announced) if closing is not None else ANNOUNCED_BATCH
        receipts, self._announced = self._announced[:take], self._announced[take:]
        if (closing or self.store) is None or not receipts:
            return
        if self._announced:
            self._announce_due = asyncio.get_running_loop().call_soon(self._clear_announced)
        # When it cannot, their call_ended may go out again after a kill: no more.
        self._wrote(
            "the receipts of delivered call_ended events", lambda store: store.announced(receipts), closing
        )

    # ---- phones ---------------------------------------------------------------------------------

    def save_step(
        self,
        stored: StoredDevice,
        ended: Sequence[CallRecord],
        receipts: Sequence[str],
        moved_from: str | None,
    ) -> None:
        """A hit's or the bridge's own step, written before it is published: sqlite3.Error, told,
        when the store cannot write it."""

        def save(store: Store) -> None:
            if moved_from is not None:
                store.rename_device(moved_from, stored.id)
            store.save(stored, ended, receipts)

        self.write(f"phone {stored.id}", save)
        if self.health.error is not None:
            self.health.wrote()

    def save(self, device: Device) -> bool:
        """Store a device as it is now (after a rename, say); False when the store cannot write,
        which `health` tells."""
        return self._wrote(f"phone {device.id}", lambda store: store.save(device.stored()))

    def forget(self, device: Device) -> bool:
        """Remove a device from the store; False when the store cannot write (`health`)."""
        return self._wrote(f"the removal of phone {device.id}", lambda store: store.delete_device(device.id))

    # ---- writes, and a store found damaged -----------------------------------------------------

    def write(self, what: str, write: Callable[[Store], object], on: Store | None = None) -> None:
        """One write to the store (`on`: one being closed): sqlite3.Error, told once as `health`
        does, when it cannot. A store found damaged is started over (`_start_over`) and the write
        made on the new one; nothing without a store."""
        store = on or self.store
        if store is None:
            return
        try:
            write(store)
            return
        except sqlite3.Error as err:
            if on is not None or not corrupt(err) or not self._start_over(err):
                self.health.failed(err, what)
                raise
        try:
            write(self.store or store)
        except sqlite3.Error as err:
            self.health.failed(err, what)
            raise

    def read(self, read: Callable[[Store], T]) -> T:
        """`read` on the store (it must be open); a store found damaged is started over
        (`_start_over`) and `read` made on the new one. sqlite3.Error when it cannot be read."""
        store = self.store
        if store is None:
            raise sqlite3.ProgrammingError("the store is closed")
        try:
            return read(store)
        except sqlite3.Error as err:
            if not corrupt(err) or not self._start_over(err):
                raise
        return read(self.store or store)

    def attempt(self, what: str, write: Callable[[Store], object], on: Store | None = None) -> bool:
        """`write`, outside a hit: False when it failed (told), and the caller carries on without it."""
        try:
            self.write(what, write, on)
        except sqlite3.Error:
            return False
        return True

    def _wrote(self, what: str, write: Callable[[Store], object], on: Store | None = None) -> bool:
        """`attempt`, and `health` told that the store writes again when it did."""
        if not self.attempt(what, write, on):
            return False
        self.health.wrote()
        return True

    def _start_over(self, err: sqlite3.Error) -> bool:
        """A store found damaged while the bridge runs, as at start: set aside, kept as it was, and
        a new one put in its place, written first with everything the bridge holds (its phones
        with their histories, its MQTT queue) so that nothing it answered is lost. False when
        that cannot be done (told), or was done less than START_OVER_EVERY ago."""
        now, damaged = self.clock(), self.store
        if damaged is None or (
            self._started_over is not None and now - self._started_over < START_OVER_EVERY
        ):
            return False
        self._started_over = now
        path, new = self.directory / FILE_NAME, self.directory / f"{FILE_NAME}.new"
        phones, pending = self.held()
        found = salvage(path)  # read-only, beside the bridge's own connection
        older = found.older_calls(rec for _, history in phones for rec in history)
        try:
            shutil.rmtree(new, ignore_errors=True)
            fresh = Store(new)
            try:
                fresh.fill(phones, pending)
                fresh.take_in_calls(older)
                fresh.set_meta(CLEAN_STOP, "0")
            finally:
                fresh.close()  # its WAL copied in: one file to move
        except (OSError, sqlite3.Error, StoreError) as failure:
            shutil.rmtree(new, ignore_errors=True)
            log.error("storage: %s: %s, and a new store cannot be written (%s)", path, err, failure)
            return False
        damaged.close(checkpoint=False)
        try:
            moved = set_aside(path, now)
            (new / FILE_NAME).rename(path)
            shutil.rmtree(new, ignore_errors=True)
            self.store = Store(self.directory)
        except (OSError, StoreError, StoreCorrupt) as failure:
            # Left with the closed store, every write fails and is told: nothing is answered
            # that is not stored.
            log.error(
                "storage: %s: %s, and it cannot be replaced (%s); restart the bridge", path, err, failure
            )
            return False
        self._outbox_kept = bool(pending)
        self._unmarked = False
        log.error(
            "storage: %s: %s; set aside as %s, and a new store started with what the bridge holds "
            "(phones: %d, their last calls: %d) and what could still be read of it (older calls: %d%s)",
            path, err, moved.name, len(phones), sum(len(history) for _, history in phones),
            len(older), unreadable(found),
        )  # fmt: skip
        return True

    # ---- upkeep ---------------------------------------------------------------------------------

    async def checkpoint(self) -> None:
        """Copy the store's WAL into its database, on a thread. SQLite starts the WAL over only when
        a write finds all of it copied; under steady load a write always comes first, and the WAL
        grew by 5 MB a second at 1,000 hits/s (100 MB after 15 s, bench/README.md). Past
        WAL_LIMIT the rest is copied on the loop (2.6 ms there, at that rate), where no write comes
        in between, and the WAL starts over. The file then stays within WAL_LIMIT and what one
        CHECKPOINT_EVERY adds (45 MB at 1,000 hits/s with 4 kB pages; a new store's are 1 kB),
        written again rather than grown."""
        store = self.store
        if store is None:
            return
        try:
            left = await asyncio.to_thread(store.checkpoint)
            if self.store is store and left > WAL_LIMIT:
                store.restart_wal()
        except sqlite3.Error as err:  # a full disk: the database cannot grow by what the WAL holds
            self.health.checkpoint(err)
            return
        self.health.checkpoint(None)
