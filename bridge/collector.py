"""Keeping Python's garbage collector off the loop, however many phones are active.

A phone's state (its `Phone`, its calls, their records, its lines) lives until the phone's next
hit: under a second at 1,000 hits/s over 1,000 phones, ten seconds over 10,000. The collector's
young generations assume objects die young, so with many phones they fill up with state that is
still in use, and each collection walks it all on the loop. Over 10,000 active phones at 1,000
hits/s, 60,000 objects sat in the young generations: middle collections took 5-14 ms every
second or two, and full ones 70-124 ms every 10-40 s (bench/README.md, "Twelfth profile").

None of that state holds a reference cycle: it is frozen dataclasses and tuples, and reference
counting frees each object when the phone's next hit replaces it. So once a second (`tick`, from
the bridge's timers) whatever is alive moves into the collector's permanent generation
(`gc.freeze()`), which no collection walks; reference counting frees it all the same.
Collections then walk at most a second's worth of new objects.

What the freeze costs: a cycle that was alive at a freeze and becomes garbage later stays until
the next full collection of everything, once every FULL_EVERY (`gc.unfreeze()`, then
`gc.collect()`). The bridge makes few cycles (full collections under load found 0-26 objects);
that collection walks everything once an hour, on the loop.
"""

import gc
import time
from collections.abc import Callable

FULL_EVERY = 3600.0  # seconds between full collections of everything, frozen or not


class Collector:
    def __init__(self, full_every: float = FULL_EVERY, clock: Callable[[], float] = time.monotonic) -> None:
        self.full_every = full_every
        self.clock = clock
        self.full_due = clock() + full_every

    def settle(self) -> None:
        """Collect what is garbage now, and freeze the rest: after the store is restored, say,
        whose phones live as long as the bridge."""
        gc.collect()
        gc.freeze()
        self.full_due = self.clock() + self.full_every

    def tick(self) -> None:
        """Every second: what is alive now is out of the collector's way."""
        if self.clock() >= self.full_due:
            gc.unfreeze()
            self.settle()
        else:
            gc.freeze()

    def stop(self) -> None:
        """The process's collector as it found it (tests run many bridges in one process)."""
        gc.unfreeze()
