"""What ships for deployment: docker-compose.yml, the Dockerfile, mosquitto.conf, the systemd unit."""

import asyncio
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import paho.mqtt.client as paho
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from bridge.mqtt import BrokerSettings, Message, MqttLink
from tests.conftest import MOSQUITTO, TIMEOUT, accepts, free_port, wait_until

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
UNIT = ROOT / "packaging" / "amego-bridge.service"


def compose_config(path: Path) -> subprocess.CompletedProcess[str]:
    docker_compose = shutil.which("docker-compose")
    if docker_compose is None:
        pytest.fail("docker-compose is not installed: run the README's test command (it installs it)")
    return subprocess.run(
        [docker_compose, "-f", str(path), "config", "-q"], capture_output=True, text=True, timeout=60
    )


def test_compose_file_validates(tmp_path: Path) -> None:
    done = compose_config(COMPOSE)
    assert done.returncode == 0, done.stderr
    # The check has teeth: the same file with one bad value does not pass.
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(COMPOSE.read_text().replace("read_only: true", "read_only: sometimes"))
    assert compose_config(broken).returncode != 0


def test_compose_runs_the_bridge_hardened_next_to_a_pinned_mosquitto() -> None:
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    assert re.fullmatch(r"eclipse-mosquitto:2\.\d+\.\d+", services["mosquitto"]["image"])
    assert (
        "./mosquitto/mosquitto.conf:/mosquitto/config/mosquitto.conf:ro" in services["mosquitto"]["volumes"]
    )
    bridge = services["bridge"]
    assert bridge["build"] == "."
    assert bridge["network_mode"] == "host"
    assert bridge["read_only"] is True
    assert bridge["cap_drop"] == ["ALL"]
    assert bridge["cap_add"] == ["NET_RAW"]
    assert not str(bridge["user"]).startswith("0")
    assert "/healthz" in " ".join(bridge["healthcheck"]["test"])
    assert bridge["environment"]["AMEGO_MQTT_URL"] == "mqtt://127.0.0.1:1883"
    mounts = {volume.split(":")[1] for volume in bridge["volumes"]}
    assert {"/config", "/data"} <= mounts
    # The image runs as the same user, its storage is the /data volume.
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim", dockerfile, re.MULTILINE)
    assert f"--uid {str(bridge['user']).split(':')[0]} " in dockerfile
    assert re.search(r"^USER amego$", dockerfile, re.MULTILINE)
    assert "AMEGO_STORAGE_DIR=/data" in dockerfile


@contextmanager
def shipped_mosquitto(tmp_path: Path) -> Iterator[int]:
    """mosquitto with the shipped config, on a free loopback port: the port."""
    port = free_port()
    tmp_path.chmod(0o777)  # mosquitto drops to its own user
    conf = (ROOT / "mosquitto" / "mosquitto.conf").read_text()
    conf = conf.replace("listener 1883\n", f"listener {port} 127.0.0.1\n")
    conf = re.sub(r"(?m)^persistence_location .*$", f"persistence_location {tmp_path}/", conf)
    (tmp_path / "mosquitto.conf").write_text(conf)
    (tmp_path / "mosquitto.conf").chmod(0o644)
    broker = subprocess.Popen([MOSQUITTO, "-c", str(tmp_path / "mosquitto.conf")], stdout=subprocess.DEVNULL)
    try:
        wait_until(lambda: accepts(port), what="mosquitto with the shipped config")
        yield port
    finally:
        broker.terminate()
        broker.wait(timeout=TIMEOUT)


def test_shipped_mosquitto_conf_keeps_a_qos1_burst_for_a_slow_subscriber(tmp_path: Path) -> None:
    """mosquitto's default (max_queued_messages 1000) would drop most of this burst."""
    with shipped_mosquitto(tmp_path) as port:
        received = burst_to_a_slow_subscriber(port, count=3000)
        assert received == 3000


def test_shipped_mosquitto_conf_lets_the_bridge_have_100_messages_in_flight(tmp_path: Path) -> None:
    """Under MQTT 5 the bridge keeps to the broker's Receive Maximum: mosquitto's default (20)
    held it back when thousands of phones started at once; the shipped config gives 100."""

    async def window(port: int) -> int:
        will = Message("packaging/bridge/state", b"offline", retain=True)
        settings = BrokerSettings("127.0.0.1", port, "bridge-packaging", will, queue_size=1000)
        up = asyncio.Event()
        link = MqttLink(settings, asyncio.get_running_loop(), up.set, lambda m: None)
        link.start()
        try:
            await asyncio.wait_for(up.wait(), TIMEOUT)
            assert link.protocol == "5"
            assert link.publish([Message(f"packaging/{n}", b"%d" % n) for n in range(300)])
            return len(link._inflight)  # what went out inside `publish`, before any answer was read
        finally:
            link.stop()

    with shipped_mosquitto(tmp_path) as port:
        assert asyncio.run(window(port)) == 100


def burst_to_a_slow_subscriber(port: int, count: int) -> int:
    """QoS 1 messages sent while the subscriber reads nothing; how many it gets once it reads."""
    got: list[int] = []
    subscribed = threading.Event()
    slow = paho.Client(CallbackAPIVersion.VERSION2, client_id="slow-subscriber")
    slow.on_message = lambda c, u, m: got.append(1)
    slow.on_subscribe = lambda *args: subscribed.set()
    slow.connect("127.0.0.1", port)
    slow.subscribe("burst/#", qos=1)
    while not subscribed.is_set():
        slow.loop(0.1)  # read until subscribed, then stop reading
    fast = paho.Client(CallbackAPIVersion.VERSION2, client_id="fast-publisher")
    fast.max_inflight_messages_set(100)
    fast.connect("127.0.0.1", port)
    fast.loop_start()
    try:
        infos = [fast.publish(f"burst/{n % 10}", b"x" * 200, qos=1) for n in range(count)]
        wait_until(lambda: all(info.is_published() for info in infos), what="the broker to take the burst")
    finally:
        fast.loop_stop()
        fast.disconnect()
    deadline = time.monotonic() + TIMEOUT
    while len(got) < count and time.monotonic() < deadline:
        slow.loop(0.1)
    slow.disconnect()
    return len(got)


def unit_settings(text: str) -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line and not line.startswith(("#", "[")) and "=" in line:
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def test_systemd_unit_is_hardened_with_only_net_raw() -> None:
    settings = unit_settings(UNIT.read_text())
    expected = {
        "AmbientCapabilities": "CAP_NET_RAW",
        "CapabilityBoundingSet": "CAP_NET_RAW",
        "DynamicUser": "yes",
        "StateDirectory": "amego-bridge",
        "ConfigurationDirectory": "amego-bridge",
        "Environment": "AMEGO_STORAGE_DIR=/var/lib/amego-bridge",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "NoNewPrivileges": "yes",
        "Restart": "on-failure",
    }
    for key, value in expected.items():
        assert settings.get(key) == [value], key
    families = set(settings["RestrictAddressFamilies"][0].split())
    assert families == {"AF_INET", "AF_INET6", "AF_PACKET", "AF_UNIX", "AF_NETLINK"}
    assert settings["ExecStart"][0].endswith("/amego-bridge run")
    assert "ProcSubset" not in settings  # it would hide /proc/net/arp


def test_systemd_unit_verifies(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (the settings are checked by the test above)")
    # verify also wants the program to exist: stand in this interpreter for the installed one.
    text = re.sub(r"(?m)^ExecStart=\S+", f"ExecStart={sys.executable}", UNIT.read_text())
    unit = tmp_path / UNIT.name
    unit.write_text(text)
    done = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert UNIT.name not in done.stderr, done.stderr
