"""What the status page watches: the events the bridge reports, the debug log of raw hits, and the
fan-out of server-sent events to open pages. Standard library only; the bridge knows nothing of pages.
"""

import asyncio
from collections import deque
from collections.abc import Iterator
from datetime import datetime

from bridge.calls import CallRecord
from bridge.frozen import frozen


@frozen
class HitSeen:
    """One request the bridge answered as a hit: accepted (status 200) or refused with a reason."""

    time: datetime
    method: str
    path: str
    query: str  # as received, the token's value masked
    source: str | None
    status: int
    reason: str  # "" when accepted
    device: str | None  # the device id, when the bridge got that far


@frozen
class DeviceChanged:
    """A phone's call, status or name changed; a device no longer in `Bridge.devices` was removed."""

    device: str
    ended: tuple[CallRecord, ...] = ()


@frozen
class HealthChanged:
    """The bridge's link to its broker went down or up, or its store stopped or started taking
    writes (`Bridge.problems` says what is wrong now)."""

    what: str  # "mqtt" or "storage"


UiEvent = HitSeen | DeviceChanged | HealthChanged


@frozen
class LoggedHit:
    seq: int
    hit: HitSeen


class HitLog:
    """The last `size` hits, oldest first, each with a sequence number that only grows."""

    def __init__(self, size: int = 500) -> None:
        self.entries: deque[LoggedHit] = deque(maxlen=size)
        self.seq = 0

    def add(self, hit: HitSeen) -> LoggedHit:
        self.seq += 1
        entry = LoggedHit(self.seq, hit)
        self.entries.append(entry)
        return entry

    def after(self, seq: int) -> Iterator[LoggedHit]:
        """The kept hits with a sequence number above `seq`, oldest first."""
        return (entry for entry in self.entries if entry.seq > seq)

    def newest(self) -> list[LoggedHit]:
        return list(reversed(self.entries))


CLOSE = ""  # put on a subscriber's queue: the stream ends and the browser reconnects


class Fanout:
    """Server-sent event frames to every open stream. Called on the event loop's thread only.

    A stream that falls `backlog` frames behind is closed rather than allowed to grow: the browser
    reconnects on its own, and the new stream starts from a fresh snapshot.
    """

    def __init__(self, backlog: int = 1000) -> None:
        self.backlog = backlog
        self.queues: set[asyncio.Queue[str]] = set()
        self.closed = False  # the server is stopping: a stream that opens now ends at once

    def __bool__(self) -> bool:
        return bool(self.queues)

    def subscribe(self) -> asyncio.Queue[str]:
        queue: asyncio.Queue[str] = asyncio.Queue(self.backlog + 1)
        if self.closed:
            queue.put_nowait(CLOSE)
        else:
            self.queues.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[str]) -> None:
        self.queues.discard(queue)

    def close_all(self) -> None:
        self.closed = True
        for queue in self.queues:
            if not queue.full():  # a full queue already ends with CLOSE
                queue.put_nowait(CLOSE)
        self.queues.clear()

    def publish(self, frame: str) -> None:
        for queue in list(self.queues):
            if queue.qsize() >= queue.maxsize - 1:  # room for CLOSE only
                self.queues.discard(queue)
                queue.put_nowait(CLOSE)
            else:
                queue.put_nowait(frame)


def frame(event: str, data: str, seq: int | None = None) -> str:
    """One server-sent event; `data` must be one line (JSON is)."""
    head = f"id: {seq}\n" if seq is not None else ""
    return f"{head}event: {event}\ndata: {data}\n\n"
