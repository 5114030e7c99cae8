"""Keeping Python's garbage collector off the loop, however many phones are active.

A phone's state (its `Phone`, its calls, their records, its lines) lives until the phone's next
hit: under a second at 1,000 hits/s over 1,000 phones, ten seconds over 10,000. The collector's
young generations assume objects die young, so with many phones they fill up with state that is
still in use, and each collection walks it all on the loop. Over 10,000 active phones at 1,000
hits/s, 60,000 objects sat in the young generations: middle collections took up to 14-16 ms
every second or two, full ones 93-104 ms about once a minute, and young ones up to 37-58 ms
(bench/README.md, "Twelfth profile").

None of that state holds a reference cycle: it is frozen dataclasses and tuples, and reference
counting frees each object when the phone's next hit replaces it. So once a second (`tick`, from
the bridge's timers) whatever is alive moves into the collector's permanent generation
(`gc.freeze()`), which no collection walks; reference counting frees it all the same.
Collections then walk at most a second's worth of new objects.

Other work does leave cycles: each request to a phone leaves its connection's objects (httpx,
httpcore, anyio, the socket's transport) as cyclic garbage, about 19 objects for a poll, twice
that with digest auth. A freeze alone kept them all: a bridge polling 200 answering phones a
second grew 1 MB every 10 s. So each tick first collects what is not frozen yet
(`gc.collect(2)`, which walks only what is newer than the last tick, since everything older is
frozen), and freezes what survived: median 1.5 ms a second at 1,000 hits/s over 1,000 phones,
2.2 ms over 10,000 (90 % within 1.9 and 4.6 ms), where the collector's own young collections took
up to 3.5-4.2 ms each. The first tick after start walks everything the start-up made (34 ms).

What the freeze costs: a cycle that was alive at a freeze and becomes garbage later stays,
until a full collection of everything (`gc.unfreeze()`, then `gc.collect()`): the objects of a
request to a phone under way at a tick, say. In a mix of 200 hits/s, 100 polls and 40 commands
a second, that came to 10-18 objects a second (55 when each tick collected the young
generations only). So every `CHECK_EVERY` the bridge counts what is frozen, and collects
everything only when that grew by a quarter since the last full collection: CPython's own rule
for its full collections (a quarter more long-lived objects), applied to what it no longer
sees. With 10,000 phones under load, the count (a walk of a list of 225,000-300,000 objects)
took 16-33 ms and such a collection 147-215 ms. The count also grows while the phones'
histories fill up (`calls.history_size`).
"""

import gc
import time
from collections.abc import Callable

CHECK_EVERY = 300.0  # seconds between counts of what is frozen
GROWTH = 1.25  # what is frozen, against the count after the last full collection, that calls for one


class Collector:
    def __init__(self, check_every: float = CHECK_EVERY, clock: Callable[[], float] = time.monotonic) -> None:
        self.check_every = check_every
        self.clock = clock
        self.check_due = clock() + check_every
        self.settled = gc.get_freeze_count()  # frozen after the last full collection

    def settle(self, frozen: int | None = None) -> None:
        """Collect what is garbage now, and freeze the rest: after the store is restored, say,
        whose phones live as long as the bridge. `frozen`: what was, just counted."""
        gc.unfreeze()
        collected = gc.collect()
        gc.freeze()
        # Counting again would walk it all once more; what a second added since is noise here.
        self.settled = gc.get_freeze_count() if frozen is None else frozen - collected

    def tick(self) -> None:
        """Every second (the bridge's timers): the second's garbage collected, and what is alive
        now out of the collector's way."""
        gc.collect(2)  # the permanent generation is left out: only what came since the last tick
        gc.freeze()
        if self.clock() >= self.check_due:
            self.check_due = self.clock() + self.check_every
            frozen = gc.get_freeze_count()
            if frozen > self.settled * GROWTH:
                self.settle(frozen)

    def stop(self) -> None:
        """The process's collector as it found it (tests run many bridges in one process)."""
        gc.unfreeze()
