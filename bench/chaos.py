"""Faults under load: does every hit answered 200 reach MQTT, whatever happens meanwhile?

    sudo python bench/chaos.py                 # 5 minutes
    sudo python bench/chaos.py --seconds 60 --rate 100

A bridge (`python -m bridge run`) takes hits from 40 phones at a steady rate, one connection
each, while every few seconds one fault comes at random:

- `broker`: the broker (a private mosquitto that keeps its sessions) stops, for up to 3 s;
- `disk`: the disk under `storage.dir` (a tmpfs of 3 MB, so root) is full, for up to 3 s;
- `kill`: the bridge is killed (SIGKILL) and started again;
- `stop`: the bridge is stopped (SIGTERM) and started again;
- `away-kill`: the broker stops, the bridge is killed 1 s later, with the hits of that second
  queued, then both start again;
- `damage`: a page of the store's phones is overwritten under the running bridge, which starts
  its store over (at most once an hour, and at its next start after that).

Each hit carries a sequence number, which the bridge keeps under `extra.seq` in
`<base>/<id>/event`. A subscriber of its own (a persistent session) counts the events that
arrive. At the end it waits for the bridge's queue to drain, then prints what was sent, how
each hit was answered, and the hits answered 200 whose event never arrived: the contract says
none (README, "Reliability"). Events that arrive twice are allowed (delivery is at least once)
and counted. Exit code 1 when one is missing.
"""

import argparse
import contextlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from contextlib import closing
from pathlib import Path

import httpx
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.run import MOSQUITTO, ROOT, clean_env, free_port, wait_until
from bridge.mqtt import broker_answers
from bridge.store import FILE_NAME

EVENTS = ("incoming_call", "call_established", "call_terminated", "off_hook", "on_hook", "missed_call")
FAULTS = ("broker", "disk", "kill", "stop", "away-kill", "damage")
BASE = "chaos"


def damage_store(path: Path, table: str = "devices") -> None:
    """The root page of `table` overwritten in the file of a store a bridge has open, as a failing
    disk might leave it. Its WAL is copied in first (TRUNCATE: again while the bridge's own
    checkpoint holds it), so that the page is read from the file, and a write by this connection
    afterwards makes the bridge's connection drop the pages it holds in memory and read them again."""
    with closing(sqlite3.connect(path, isolation_level=None)) as db:
        wait_until(
            lambda: db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0, 10, "a checkpoint"
        )
        root, size = db.execute(
            "SELECT rootpage, (SELECT page_size FROM pragma_page_size) FROM sqlite_master WHERE name = ?",
            (table,),
        ).fetchone()
        with path.open("r+b") as file:
            file.seek((root - 1) * size)
            file.write(b"\xff" * size)
        db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('damaged', ?)", (table,))


class Events:
    """The events that arrive, counted by the sequence number their hit carried."""

    def __init__(self, port: int) -> None:
        self.lock = threading.Lock()
        self.seen: Counter[int] = Counter()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id="chaos-watch", clean_session=False)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(f"{BASE}/+/event", qos=1)
        self.client.on_message = self.on_message
        self.client.reconnect_delay_set(1, 1)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def on_message(self, client: paho.Client, userdata: object, msg: paho.MQTTMessage) -> None:
        seq = (json.loads(msg.payload).get("extra") or {}).get("seq")
        if seq is not None:
            with self.lock:
                self.seen[int(seq)] += 1

    def missing(self, accepted: list[int]) -> list[int]:
        with self.lock:
            return [n for n in accepted if n not in self.seen]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class Rig:
    """The broker, the disk and the bridge, each of which a fault can take away."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.mqtt_port, self.http_port = free_port(), free_port()
        sessions = workdir / "mosquitto"
        sessions.mkdir()
        for where in (workdir, sessions):
            where.chmod(0o777)  # mosquitto drops to its own user
        self.mosquitto_conf = workdir / "mosquitto.conf"
        self.mosquitto_conf.write_text(
            f"listener {self.mqtt_port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
            f"persistence_location {sessions}/\nmax_queued_messages 0\nlog_dest stderr\nlog_type error\n"
        )
        self.disk = workdir / "disk"
        self.disk.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(self.disk)], check=True)
        self.config = workdir / "bridge.toml"
        self.config.write_text(
            f'[http]\nhost = "127.0.0.1"\nport = {self.http_port}\n'
            f'[mqtt]\nurl = "mqtt://127.0.0.1:{self.mqtt_port}"\nbase_topic = "{BASE}"\n'
            f'[arp]\nenabled = false\n[poll]\ninterval = 0\n[storage]\ndir = "{self.disk / "data"}"\n'
        )
        self.log = (workdir / "bridge.log").open("ab")
        self.closed = False
        self.broker = self.start_broker()
        self.bridge = self.start_bridge()

    def start_broker(self) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen([MOSQUITTO, "-c", str(self.mosquitto_conf)], stderr=subprocess.DEVNULL)
        wait_until(lambda: broker_answers("127.0.0.1", self.mqtt_port, 0.2), 10, "mosquitto")
        return proc

    def start_bridge(self) -> subprocess.Popen[bytes]:
        cmd = [sys.executable, "-m", "bridge", "run", "--config", str(self.config)]
        proc = subprocess.Popen(cmd, cwd=ROOT, env=clean_env(), stdout=self.log, stderr=subprocess.STDOUT)
        wait_until(lambda: self.health() is not None, 20, "the bridge")
        return proc

    def health(self) -> dict[str, object] | None:
        try:
            answer = httpx.get(f"http://127.0.0.1:{self.http_port}/healthz", timeout=1)
        except httpx.HTTPError:
            return None
        data: dict[str, object] = answer.json()
        return data

    def fault(self, kind: str, rng: random.Random) -> str:
        """Brings one fault and takes it away again; what happened, in words."""
        if kind == "broker":
            self.broker.terminate()
            self.broker.wait()
            away = rng.uniform(0.5, 3)
            time.sleep(away)
            self.broker = self.start_broker()
            return f"broker away {away:.1f} s"
        if kind == "disk":
            filler = self.disk / "filler"
            with filler.open("wb", buffering=0) as out:
                try:
                    while True:
                        out.write(b"\0" * 65536)
                except OSError:
                    pass
            full = rng.uniform(1, 3)
            time.sleep(full)
            filler.unlink()
            return f"disk full {full:.1f} s"
        if kind == "damage":
            log = self.workdir / "bridge.log"
            started_over = log.read_text(errors="replace").count("set aside as")
            damage_store(self.disk / "data" / FILE_NAME)

            # The next hit that changes a phone finds it. Within the hour after a start over, it
            # is refused, as the next ones are, until the next start sets the store aside.
            def found() -> str | None:
                if log.read_text(errors="replace").count("set aside as") > started_over:
                    return "started over"
                return "refused until a restart" if (self.health() or {}).get("storage_error") else None

            wait_until(lambda: found() is not None, 10, "the damage found")
            for moved in (self.disk / "data").glob("*.corrupt-*"):  # the disk is 3 MB: kept, not needed
                moved.unlink()
            return f"store damaged: {found()}"
        if kind == "kill":
            self.bridge.kill()
            self.bridge.wait()
            self.bridge = self.start_bridge()
            return "bridge killed"
        if kind == "away-kill":
            self.broker.terminate()
            self.broker.wait()
            time.sleep(1)
            self.bridge.kill()
            self.bridge.wait()
            self.broker = self.start_broker()
            self.bridge = self.start_bridge()
            return "bridge killed while the broker was away"
        self.bridge.send_signal(signal.SIGTERM)
        code = self.bridge.wait()
        self.bridge = self.start_bridge()
        return f"bridge stopped (exit code {code})"

    def close(self) -> int | None:
        """Stops the bridge and the broker and unmounts the disk, once: the bridge's exit code."""
        if self.closed:
            return self.bridge.returncode
        self.closed = True
        self.bridge.send_signal(signal.SIGTERM)
        code = self.bridge.wait()
        self.broker.terminate()
        self.broker.wait()
        subprocess.run(["umount", "-l", str(self.disk)], check=False)
        return code


def load(port: int, rate: float, answers: dict[int, str], stopping: threading.Event) -> None:
    """Hits from 40 phones, a new connection each, at `rate` a second, until `stopping`."""
    rng = random.Random(1)
    seq = 0
    while not stopping.is_set():
        seq += 1
        phone = f"0015650c{rng.randrange(40):04x}"
        path = f"/{rng.choice(EVENTS)}/yealink?device={phone}&remote=555{rng.randrange(100)}&seq={seq}"
        try:
            answers[seq] = str(httpx.get(f"http://127.0.0.1:{port}{path}", timeout=5).status_code)
        except httpx.HTTPError as err:
            answers[seq] = type(err).__name__  # the bridge was down: not accepted
        time.sleep(1 / rate)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=300, help="how long faults come (default 300)")
    p.add_argument("--rate", type=float, default=100, help="hits a second, about (default 100)")
    p.add_argument("--seed", type=int, default=2, help="which faults, and when")
    p.add_argument("--each", action="store_true", help="each fault once, in turn, 2 s apart (for tests)")
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        print("bench/chaos.py needs root: it mounts a tmpfs to fill", file=sys.stderr)
        return 2
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="amego-chaos-") as workdir:
        rig = Rig(Path(workdir))
        try:
            events = Events(rig.mqtt_port)
            answers: dict[int, str] = {}
            stopping = threading.Event()
            sender = threading.Thread(target=load, args=(rig.http_port, args.rate, answers, stopping))
            sender.start()
            began = time.monotonic()
            happened: list[str] = []

            def next_fault() -> str | None:
                """The next fault, after a pause; None when the run is over."""
                if args.each:
                    if len(happened) == len(FAULTS):
                        return None
                    time.sleep(2)
                    return FAULTS[len(happened)]
                if time.monotonic() - began >= args.seconds:
                    return None
                time.sleep(rng.uniform(4, 8))
                return rng.choice(FAULTS)

            try:
                while (kind := next_fault()) is not None:
                    at = time.monotonic() - began
                    happened.append(f"{at:.0f} s: {rig.fault(kind, rng)}")
                    print(happened[-1], file=sys.stderr)
            finally:
                stopping.set()
                sender.join()
            wait_until(
                lambda: (rig.health() or {}).get("queue_length") == 0, 60, "the bridge's queue to drain"
            )
            accepted = [n for n, answer in answers.items() if answer == "200"]
            with contextlib.suppress(RuntimeError):  # what is missing then is told below
                wait_until(lambda: not events.missing(accepted), 30, "every accepted hit's event")
            missing = events.missing(accepted)
            with events.lock:
                twice = sum(1 for n in accepted if events.seen[n] > 1)
                unanswered = sorted(n for n in events.seen if answers.get(n) != "200")
            events.close()
            code = rig.close()
        finally:
            rig.close()  # also when a fault failed: the tmpfs goes before its directory
    print(f"faults: {len(happened)} ({', '.join(happened)})")
    print(f"hits sent: {len(answers)}, answered: {dict(Counter(answers.values()).most_common())}")
    print(f"answered 200: {len(accepted)}; their events arrived: {len(accepted) - len(missing)}")
    print(f"missing: {len(missing)} {missing[:20]}")
    print(f"arrived twice (at least once is the contract): {twice}")
    print(f"events of hits not answered 200 (the bridge went down before its answer): {len(unanswered)}")
    print(f"the bridge's last stop: exit code {code}")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
