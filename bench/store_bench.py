"""The call log at scale: the last 100 calls of one phone among a million records.

    python bench/store_bench.py [--records 1000000] [--phones 1000]

Prints the query time (median and worst of 50 runs, each on a different phone) with the full
table, and the same query on a table of 10,000 records measured in the same run (the baseline),
and their ratio. The target is under 50 ms at a million records.
"""

import argparse
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bridge.calls import CallRecord, CallResult, Direction
from bridge.store import CallQuery, Store

T0 = datetime(2025, 1, 1, tzinfo=UTC)


def fill(store: Store, records: int, phones: int) -> None:
    batch: list[CallRecord] = []
    for i in range(records):
        started = T0 + timedelta(seconds=30 * i)
        batch.append(
            CallRecord(
                call_id=f"c{i}",
                device=f"02000000{i % phones:04x}",
                direction=Direction.INCOMING if i % 3 else Direction.OUTGOING,
                number=f"+49301{i % 100000:05d}",
                name=None,
                line="100",
                started=started,
                answered=started + timedelta(seconds=4),
                ended=started + timedelta(seconds=20),
                ring_seconds=4.0,
                talk_seconds=16.0,
                result=CallResult.ANSWERED,
            )
        )
        if len(batch) == 10_000:
            store.save(None, batch)
            batch.clear()
    store.save(None, batch)


def measure(store: Store, phones: int, runs: int = 50) -> list[float]:
    times = []
    for run in range(runs):
        device = f"02000000{(run * 7919) % phones:04x}"
        start = time.perf_counter()
        rows = store.calls(CallQuery(device=device, limit=100))
        times.append((time.perf_counter() - start) * 1000)
        assert rows, device
    return times


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--phones", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        small, big = Store(Path(tmp) / "small"), Store(Path(tmp) / "big")
        fill(small, 10_000, args.phones)
        started = time.perf_counter()
        fill(big, args.records, args.phones)
        filled = time.perf_counter() - started
        base, full = measure(small, args.phones), measure(big, args.phones)
    print(f"filled {args.records:,} records in {filled:.1f} s ({args.records / filled:,.0f} records/s)")
    print(f"{'table':>12} {'median ms':>10} {'worst ms':>9}")
    print(f"{'10,000':>12} {statistics.median(base):>10.2f} {max(base):>9.2f}")
    print(f"{args.records:>12,} {statistics.median(full):>10.2f} {max(full):>9.2f}")
    print(f"ratio (median): {statistics.median(full) / statistics.median(base):.2f}x; target: under 50 ms")


if __name__ == "__main__":
    main()
