"""`amego-bridge run` as a user runs it: a real process, its log, its exit, the broker it picks."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx
import pytest

from tests.conftest import TIMEOUT, Mosquitto, Watcher, accepts, free_port, unique_base, wait_until

ROOT = Path(__file__).resolve().parent.parent
MOSQUITTO_SUB = shutil.which("mosquitto_sub") or "/usr/bin/mosquitto_sub"
MAC = "001565aabbcc"
INCOMING = f"/incomingcall/yealink?device={MAC}&local=100&remote=5551234&displayremote=Alice"


def toml(data: dict[str, dict[str, object]]) -> str:
    lines = []
    for section, values in data.items():
        lines.append(f"[{section}]")
        lines += [f"{key} = {json.dumps(value)}" for key, value in values.items()]
    return "\n".join(lines) + "\n"


def environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AMEGO_")}
    return env | {"PYTHONPATH": str(ROOT)}


@dataclass
class Lines:
    """The lines a subprocess writes to a pipe, collected by a thread."""

    lines: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def follow(self, pipe: IO[str] | None) -> None:
        assert pipe is not None

        def read() -> None:
            with pipe:
                for line in pipe:
                    with self.lock:
                        self.lines.append(line.rstrip("\n"))

        threading.Thread(target=read, daemon=True).start()

    def wait_for(self, text: str, timeout: float = TIMEOUT) -> str:
        found: list[str] = []

        def seen() -> bool:
            with self.lock:
                found.extend(line for line in self.lines if text in line)
            return bool(found)

        wait_until(seen, timeout, what=f"a line with {text!r}")
        return found[0]

    @property
    def text(self) -> str:
        with self.lock:
            return "\n".join(self.lines)


class BridgeProcess:
    """`python -m bridge run` on a free HTTP port, from a config file in a directory of its own."""

    def __init__(self, workdir: Path, config: dict[str, dict[str, object]], *args: str) -> None:
        http = config["http"]
        assert isinstance(http.get("port"), int)
        self.port: int = http["port"]  # type: ignore[assignment]
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "config.toml").write_text(toml(config))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bridge", "run", *args],
            cwd=workdir,
            env=environment(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.log = Lines()
        self.log.follow(self.proc.stderr)

    def wait_ready(self) -> None:
        self.log.wait_for("Application startup complete")
        # uvicorn binds after that line
        wait_until(lambda: accepts(self.port), what=f"the bridge to listen on {self.port}")

    def hit(self, path: str) -> httpx.Response:
        with httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=TIMEOUT) as client:
            return client.get(path)

    def terminate(self) -> int:
        """SIGTERM, as systemd and Docker stop it; the exit code."""
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=TIMEOUT)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=TIMEOUT)


def bridge_config(tmp_path: Path, mqtt: dict[str, object]) -> dict[str, dict[str, object]]:
    return {
        "http": {"host": "127.0.0.1", "port": free_port()},
        "mqtt": mqtt,
        "arp": {"enabled": False},
        "storage": {"dir": str(tmp_path / "data")},
    }


def hold(port: int) -> socket.socket:
    """A socket listening on 127.0.0.1:port; it fails when something else still holds the port."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers do: TIME_WAIT is no holder
    sock.bind(("127.0.0.1", port))
    sock.listen()
    return sock


def subscribe(port: int, topic: str, prefix: tuple[str, ...] = ()) -> tuple[subprocess.Popen[str], Lines]:
    """A real mosquitto_sub, as the README has the user run it."""
    if not Path(MOSQUITTO_SUB).exists():
        pytest.fail("mosquitto_sub is not installed: run the README's test command (it installs it)")
    sub = subprocess.Popen(
        [*prefix, MOSQUITTO_SUB, "-h", "127.0.0.1", "-p", str(port), "-t", topic, "-v"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines = Lines()
    lines.follow(sub.stdout)
    return sub, lines


def test_embedded_broker_then_mosquitto_sub_shows_a_hit(
    tmp_path: Path, processes: list[BridgeProcess]
) -> None:
    mqtt_port = free_port()
    config = bridge_config(tmp_path, {"url": "embedded", "embedded_listen": f"127.0.0.1:{mqtt_port}"})
    bridge = BridgeProcess(tmp_path / "run", config)
    processes.append(bridge)
    bridge.wait_ready()
    assert f"MQTT broker mqtt://127.0.0.1:{mqtt_port} (embedded, amqtt" in bridge.log.text
    sub, seen = subscribe(mqtt_port, "amego/#")
    try:
        seen.wait_for('amego/bridge/state {"state":"online"}')  # retained: mosquitto_sub is in
        assert bridge.hit(INCOMING).status_code == 200
        event = json.loads(seen.wait_for(f"amego/{MAC}/event ").split(" ", 1)[1])
        assert (event["event_type"], event["number"], event["name"]) == ("incoming_call", "5551234", "Alice")
        call = json.loads(seen.wait_for(f"amego/{MAC}/call ").split(" ", 1)[1])
        assert call["state"] == "ringing"
    finally:
        sub.terminate()
        sub.wait(timeout=TIMEOUT)
    assert bridge.terminate() == 0
    hold(mqtt_port).close()  # the broker went with the bridge: its port is free again


def test_embedded_listen_in_use_stops_with_one_line(tmp_path: Path) -> None:
    mqtt_port = free_port()
    with hold(mqtt_port):
        config = bridge_config(tmp_path, {"url": "embedded", "embedded_listen": f"127.0.0.1:{mqtt_port}"})
        (tmp_path / "config.toml").write_text(toml(config))
        done = subprocess.run(
            [sys.executable, "-m", "bridge", "run"],
            cwd=tmp_path,
            env=environment(),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        f"amego-bridge: mqtt.embedded_listen 127.0.0.1:{mqtt_port}: cannot listen: "
        "the address is in use (another broker? set mqtt.url to use it)"
    )


@pytest.mark.skipif(os.geteuid() != 0, reason="a network namespace needs root")
def test_nothing_on_1883_starts_the_embedded_broker_there(tmp_path: Path) -> None:
    """A machine where nothing listens on 1883: a fresh network namespace, and no config at all."""
    if not shutil.which("ip"):
        pytest.skip("iproute2 (ip) is not installed")
    netns = f"amego-run-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", netns], check=True)
    inside = ("ip", "netns", "exec", netns)
    bridge: subprocess.Popen[str] | None = None
    sub: subprocess.Popen[str] | None = None
    try:
        subprocess.run([*inside, "ip", "link", "set", "lo", "up"], check=True)
        workdir = tmp_path / "empty"
        workdir.mkdir()
        bridge = subprocess.Popen(
            [*inside, sys.executable, "-m", "bridge", "run", "--log-level", "info"],
            cwd=workdir,
            env=environment(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        log = Lines()
        log.follow(bridge.stderr)
        log.wait_for("Application startup complete")
        assert "MQTT broker mqtt://127.0.0.1:1883 (embedded, amqtt" in log.text
        assert "config: defaults (no config file)" in log.text
        sub, seen = subscribe(1883, "amego/#", prefix=inside)
        seen.wait_for('amego/bridge/state {"state":"online"}')
        curl = [
            sys.executable,
            "-c",
            "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=5)",
        ]
        subprocess.run([*inside, *curl, f"http://127.0.0.1:8080{INCOMING}"], check=True, timeout=30)
        event = json.loads(seen.wait_for(f"amego/{MAC}/event ").split(" ", 1)[1])
        assert event["event_type"] == "incoming_call"
        bridge.send_signal(signal.SIGTERM)
        assert bridge.wait(timeout=TIMEOUT) == 0
    finally:
        for process in (sub, bridge):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait(timeout=TIMEOUT)
        subprocess.run(["ip", "netns", "del", netns], check=False)


def test_sigterm_sends_what_is_queued_then_offline_and_exits_0(
    tmp_path: Path, mosquitto: Mosquitto, processes: list[BridgeProcess]
) -> None:
    base = unique_base()
    config = bridge_config(tmp_path, {"url": mosquitto.url, "base_topic": base, "client_id": f"run-{base}"})
    watcher = Watcher(mosquitto.port, f"{base}/#")
    try:
        bridge = BridgeProcess(tmp_path / "run", config)
        processes.append(bridge)
        bridge.wait_ready()
        watcher.wait_for(f"{base}/bridge/state", lambda p: p == {"state": "online"})
        hits = 40
        for n in range(hits):
            assert bridge.hit(f"/offhook/yealink?device=0015650000{n:02x}").status_code == 200
        assert bridge.terminate() == 0
        watcher.wait_for(f"{base}/bridge/state", lambda p: p == {"state": "offline"})
        with watcher.lock:
            received = list(watcher.messages)
        offline = next(
            i
            for i, m in enumerate(received)
            if m.topic == f"{base}/bridge/state" and m.json()["state"] == "offline"
        )
        events = [
            i for i, m in enumerate(received) if m.topic.endswith("/event") and "/bridge/" not in m.topic
        ]
        assert len(events) == hits  # every accepted hit reached the broker before the bridge left
        assert max(events) < offline
        assert "Application shutdown complete" in bridge.log.text
    finally:
        watcher.close()
    late = Watcher(mosquitto.port, f"{base}/bridge/state")
    try:
        assert late.wait_for(f"{base}/bridge/state") == {"state": "offline"}  # retained
    finally:
        late.close()


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_log_has_one_line_per_refusal_no_access_log_and_no_secrets(
    tmp_path: Path, mosquitto: Mosquitto, processes: list[BridgeProcess], log_format: str
) -> None:
    password, token = f"pw-{uuid.uuid4().hex}", f"tok-{uuid.uuid4().hex}"
    url = f"mqtt://amego:{password}@127.0.0.1:{mosquitto.port}"
    base = unique_base()
    config = bridge_config(tmp_path, {"url": url, "base_topic": base})
    config["http"]["token"] = token
    bridge = BridgeProcess(tmp_path / "run", config, "--log-level", "debug", "--log-format", log_format)
    processes.append(bridge)
    bridge.wait_ready()
    assert bridge.hit(f"/offhook/yealink?device={MAC}&token=wrong").status_code == 403
    assert bridge.hit(f"/offhook/yealink?device={MAC}&token={token}").status_code == 200
    assert bridge.hit(f"/off%0Ahook%0D%0Aforged/yealink?token={token}").status_code == 400
    assert bridge.terminate() == 0
    log = bridge.log.text
    assert password not in log
    assert token not in log
    lines = log.splitlines()
    if log_format == "json":
        entries = [json.loads(line) for line in lines]  # every line is one JSON object
        messages = [e["message"] for e in entries if e["level"] == "warning"]
    else:
        messages = [line for line in lines if " WARNING " in line]
        assert all(line[:4].isdigit() for line in lines)  # no continuation lines
    refusals = [m for m in messages if "refused 403" in m]
    assert len(refusals) == 1
    assert "missing or wrong token" in refusals[0]
    forged = [m for m in messages if "refused 400" in m]
    assert len(forged) == 1
    assert "forged" in forged[0]
    assert "\n" not in forged[0]
    assert "uvicorn.access" not in log
    assert '"GET /offhook' not in log  # no access log lines
