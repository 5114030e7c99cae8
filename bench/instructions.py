"""Instructions per hit, the bridge against the relay: a count that a busy machine does not change.

    python bench/instructions.py             # one to two minutes
    python bench/instructions.py --calls 20  # about a hundred hits (tests/test_bench.py)

Each server runs under valgrind's callgrind, which counts the instructions every thread of it
executes (CPU time on a shared machine swings by ±30 % from run to run; this count moved by 0.1 %
for the bridge and 3 % for the relay). Both get the same hits: phones that register, then play
`--calls` scenarios between them, with a fixed seed. The count starts after the registrations
and stops once the server's MQTT queue is empty, so each server's whole work for those hits is
in it, and nothing else. Instructions are not time: a cache miss or a system call costs far more
than its instructions (bench/README.md).
"""

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.run import Load, Server, drive, mosquitto, start_baseline, start_bridge, wait_until

PHONES = 50
READY_WITHIN = 300.0  # seconds: a server starts about 30 times slower under valgrind
_TOTAL = re.compile(rb"^(?:summary|totals): (\d+)", re.MULTILINE)


@dataclass(frozen=True)
class Count:
    hits: int
    instructions: int

    @property
    def per_hit(self) -> int:
        return round(self.instructions / self.hits)


def count(server: Server, workdir: Path, profile: Path, calls: int) -> Count:
    """The instructions `server` (under callgrind) executes for its share of the load."""
    wait_until(server.ready, READY_WITHIN, f"the {server.name} to start under valgrind")

    def play(scenarios: int) -> Load:  # 0: the phones' registrations only
        args = ("--phones", str(PHONES), "--rate", "0", "--concurrency", "8", "--calls", str(scenarios))
        load = drive(server, workdir, *args)
        wait_until(server.drained, 120, f"the {server.name}'s MQTT queue to drain")
        return load

    play(0)
    pid = str(server.proc.pid)
    subprocess.run(["callgrind_control", "--zero", pid], check=True, capture_output=True)
    load = play(calls)
    if load.ok != load.hits:
        raise RuntimeError(f"the {server.name} refused hits: {load.statuses}")
    subprocess.run(["callgrind_control", "--dump", pid], check=True, capture_output=True)
    dump = Path(f"{profile}.1")
    totals: list[int] = []

    def dumped() -> bool:
        found = _TOTAL.search(dump.read_bytes()) if dump.exists() else None
        if found is not None:
            totals.append(int(found.group(1)))
        return found is not None

    wait_until(dumped, 60, "the dump")
    return Count(load.ok, totals[-1])


def run(calls: int) -> dict[str, Count]:
    counts: dict[str, Count] = {}
    with tempfile.TemporaryDirectory(prefix="amego-instructions-") as directory:
        workdir = Path(directory)
        with mosquitto(workdir) as broker:
            for name in ("baseline", "bridge"):
                profile = workdir / f"{name}.callgrind"
                prefix = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={profile}"]
                start = start_bridge if name == "bridge" else start_baseline
                server = start(workdir, broker.port, name, prefix=prefix)
                try:
                    counts[name] = count(server, workdir, profile, calls)
                finally:
                    server.stop()
                print(f"  {name}: {counts[name].per_hit:,} instructions a hit", file=sys.stderr)
    return counts


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--calls", type=int, default=400, help=f"scenarios {PHONES} phones play between them")
    p.add_argument("--json", metavar="FILE", help="write the counts as JSON to FILE")
    args = p.parse_args(argv)
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        print("instructions: valgrind is not installed (apt-get install valgrind)", file=sys.stderr)
        return 2
    counts = run(args.calls)
    base, bridge = counts["baseline"], counts["bridge"]
    print(f"{'':32}{'baseline':>12}{'bridge':>12}{'bridge/baseline':>17}")
    print(f"{'hits':32}{base.hits:>12,}{bridge.hits:>12,}")
    ratio = bridge.per_hit / base.per_hit
    print(f"{'instructions per hit':32}{base.per_hit:>12,}{bridge.per_hit:>12,}{ratio:>17.2f}")
    if args.json:
        report = {name: {**asdict(c), "per_hit": c.per_hit} for name, c in counts.items()}
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
