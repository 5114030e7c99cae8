"""Real parts for tests: a private mosquitto per test session, an MQTT watcher, a bridge on a free port."""

import asyncio
import atexit
import contextlib
import functools
import json
import random
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx
import paho.mqtt.client as paho
import pytest
import uvicorn
from paho.mqtt.enums import CallbackAPIVersion

from bridge.app import build_app
from bridge.broker import EmbeddedBroker
from bridge.config import Config, parse_config
from bridge.mqtt import Endpoint, broker_answers
from bridge.service import Bridge
from tests.phone_standin import StandIn

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
# Each bridge's store, by base topic (unique per test); the whole folder goes at the end of the run.
STORAGE = Path(tempfile.mkdtemp(prefix="amego-tests-"))
atexit.register(shutil.rmtree, STORAGE, True)
TIMEOUT = 10.0


FIRST_TEST_PORT = 20_000  # where free_port starts looking: above the well-known services' ports


def free_port() -> int:
    """A loopback port free now, below the kernel's range of ephemeral ports: a server a test
    starts on it a moment later (a mosquitto, a bridge process) cannot find it taken meanwhile by
    the local port of some connection, which once failed a CI run with EADDRINUSE."""
    top = max(ephemeral_ports_start(), FIRST_TEST_PORT + 1_000)  # a machine set up otherwise: still some
    for port in random.sample(range(FIRST_TEST_PORT, top), 500):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue  # in use, or still in TIME_WAIT
            return port
    raise RuntimeError(f"no free port among 500 tried in {FIRST_TEST_PORT}-{top}")


@functools.cache
def ephemeral_ports_start() -> int:
    """The first port the kernel hands out to outgoing connections (Linux: 32768 by default)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768


def accepts(port: int) -> bool:
    """Whether something accepts TCP connections on 127.0.0.1:port."""
    return broker_answers("127.0.0.1", port, timeout=0.2)


class Killable(Protocol):
    def kill(self) -> None: ...


@pytest.fixture
def processes() -> Iterator[list[Killable]]:
    """Processes a test starts (`tests.test_run.BridgeProcess`), killed after it if still running."""
    started: list[Killable] = []
    yield started
    for process in started:
        process.kill()


def wait_until(condition: Callable[[], bool], timeout: float = TIMEOUT, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.005)


class Mosquitto:
    """A private mosquitto on a free loopback port; it can be stopped and started again."""

    def __init__(
        self, workdir: Path, persistent: bool = False, acl: str | None = None, extra: str = ""
    ) -> None:
        self.port = free_port()
        self.conf = workdir / "mosquitto.conf"
        workdir.chmod(0o777 if persistent else 0o755)  # mosquitto drops to its own user
        persistence = "persistence false\n"
        if persistent:
            persistence = f"persistence true\npersistence_location {workdir}/\n"
        access = ""
        if acl is not None:  # the lines of an ACL file, for anonymous clients
            (workdir / "acl").write_text(acl)
            (workdir / "acl").chmod(0o644)
            access = f"acl_file {workdir / 'acl'}\n"
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\n{persistence}{access}{extra}"
            "max_queued_messages 0\nlog_dest stderr\nlog_type error\n"
        )
        self.conf.chmod(0o644)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stderr=subprocess.DEVNULL)
        wait_until(lambda: accepts(self.port), what=f"mosquitto on port {self.port}")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    @property
    def endpoint(self) -> Endpoint:
        return Endpoint("127.0.0.1", self.port)


class Embedded:
    """The bridge's embedded broker on a free port, on an event loop in a thread of its own."""

    def __init__(self) -> None:
        self.port = free_port()
        self.broker = EmbeddedBroker("127.0.0.1", self.port)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def start(self) -> None:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.broker.start(), self.loop).result(TIMEOUT)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.broker.stop(), self.loop).result(TIMEOUT)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(TIMEOUT)
        self.loop.close()

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    @property
    def endpoint(self) -> Endpoint:
        return self.broker.endpoint


@pytest.fixture(scope="session")
def embedded() -> Iterator[Embedded]:
    broker = Embedded()
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture
def broker(request: pytest.FixtureRequest) -> Mosquitto | Embedded:
    """The broker of `watcher` and `running`: mosquitto, unless a test module parametrizes it
    (`pytest.mark.parametrize("broker", ["mosquitto", "embedded"], indirect=True)`)."""
    found: Mosquitto | Embedded = request.getfixturevalue(getattr(request, "param", "mosquitto"))
    return found


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    if not Path(MOSQUITTO).exists():
        pytest.fail("mosquitto is not installed: run the README's test command (it installs it)")
    broker = Mosquitto(tmp_path_factory.mktemp("mosquitto"))
    broker.start()
    yield broker
    broker.stop()


@contextlib.contextmanager
def private_mosquitto(**options: Any) -> Iterator[Mosquitto]:
    """A started broker of a test's own, with `Mosquitto`'s options (persistent, acl, extra).

    Not under tmp_path: pytest's base directory is 0700, so mosquitto (its own user) could not
    read an ACL file there, nor save its sessions."""
    with tempfile.TemporaryDirectory(prefix="amego-mosquitto-") as workdir:
        Path(workdir).chmod(0o755)
        (Path(workdir) / "broker").mkdir()
        broker = Mosquitto(Path(workdir) / "broker", **options)
        broker.start()
        try:
            yield broker
        finally:
            broker.stop()


@pytest.fixture
def own_mosquitto() -> Iterator[Mosquitto]:
    """A broker of this test's own, for tests that stop it; it keeps sessions across restarts, so a
    watcher away during a restart loses nothing."""
    with private_mosquitto(persistent=True) as broker:
        yield broker


@pytest.fixture
def phones() -> Iterator[Callable[..., StandIn]]:
    """Stand-in phones (tests/phone_standin.py), made with the settings given; closed after the test."""
    made: list[StandIn] = []

    def make(**settings: Any) -> StandIn:
        made.append(StandIn(**settings))
        return made[-1]

    yield make
    for standin in made:
        standin.close()


@dataclass
class Received:
    topic: str
    payload: bytes
    retain: bool

    def json(self) -> Any:
        return json.loads(self.payload)


@dataclass
class Watcher:
    """An MQTT client that records what arrives on a topic filter."""

    port: int
    topic: str
    persistent: bool = False  # a session the broker keeps while the watcher is away
    messages: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"watch-{uuid.uuid4().hex[:8]}",
            clean_session=not self.persistent,
        )
        self.client.reconnect_delay_set(0.1, 0.5)  # type: ignore[arg-type]  # paho takes floats; typed int
        self.subscribed = threading.Event()
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(self.topic, qos=1)
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self.subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", self.port)
        self.client.loop_start()
        assert self.subscribed.wait(TIMEOUT), "watcher did not subscribe"

    def _on_message(self, client: paho.Client, userdata: object, msg: paho.MQTTMessage) -> None:
        with self.lock:
            self.messages.append(Received(msg.topic, bytes(msg.payload), bool(msg.retain)))

    def on(self, topic: str) -> list[Received]:
        with self.lock:
            return [m for m in self.messages if m.topic == topic]

    def wait_for(
        self, topic: str, match: Callable[[Any], bool] = lambda p: True, timeout: float = TIMEOUT
    ) -> Any:
        """The first payload on `topic` (decoded JSON) for which `match` holds."""
        found: list[Any] = []

        def check() -> bool:
            for m in self.on(topic):
                payload = m.json()
                if match(payload):
                    found.append(payload)
                    return True
            return False

        wait_until(check, timeout, what=f"a matching message on {topic}")
        return found[0]

    def last(self, topic: str) -> Any:
        messages = self.on(topic)
        assert messages, f"nothing on {topic}"
        return messages[-1].json()

    def clear(self) -> None:
        with self.lock:
            self.messages.clear()

    def close(self) -> None:
        self.client.disconnect()  # wakes paho's loop, so loop_stop need not wait out its select
        self.client.loop_stop()


@dataclass
class RunningBridge:
    bridge: Bridge
    port: int
    base: str
    server: uvicorn.Server
    thread: threading.Thread
    host: str = "127.0.0.1"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def hit(self, path: str, method: str = "GET", **kwargs: object) -> httpx.Response:
        """One request on a new connection, as phones do."""
        with httpx.Client(base_url=self.url, timeout=TIMEOUT) as client:
            return client.request(method, path, **kwargs)  # type: ignore[arg-type]

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=TIMEOUT)


def make_config(
    base_topic: str, broker_url: str, extra: Mapping[str, Mapping[str, object]] | None = None
) -> Config:
    data: dict[str, dict[str, object]] = {
        "mqtt": {"url": broker_url, "base_topic": base_topic, "client_id": f"bridge-{base_topic}"},
        "arp": {"enabled": False},
        "storage": {"dir": str(STORAGE / base_topic)},
        "poll": {"interval": 0},  # tests of polling turn it on; elsewhere it would add requests to phones
    }
    for section, values in (extra or {}).items():
        data.setdefault(section, {}).update(values)
    config, warnings = parse_config(data, env={})
    assert not warnings, warnings
    return config


def start_bridge(config: Config, endpoint: Endpoint, host: str = "127.0.0.1") -> RunningBridge:
    """A real bridge on a free port of `host` (another address for phones in network namespaces)."""
    bridge = Bridge(config)
    app = build_app(bridge, bridge.broker_settings(endpoint))
    # Bound here and handed to uvicorn: a port found free and bound only after the app's start-up
    # was taken meanwhile, now and then, by another connection's ephemeral port (EADDRINUSE).
    listener = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    listener.bind((host, 0))
    port = listener.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=host,
            port=port,
            access_log=False,
            log_config=None,
            lifespan="on",
            http=app.state.http_protocol,
        )
    )
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[listener])), daemon=True)
    thread.start()
    wait_until(lambda: server.started, what="the bridge to listen")
    wait_until(lambda: bridge.link is not None and bridge.link.connected, what="the bridge's MQTT connection")
    return RunningBridge(bridge, port, config.mqtt.base_topic, server, thread, host)


def unique_base() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
def base_topic() -> str:
    return unique_base()


@pytest.fixture
def watcher(broker: Mosquitto | Embedded, base_topic: str) -> Iterator[Watcher]:
    w = Watcher(broker.port, f"{base_topic}/#")
    yield w
    w.close()


@pytest.fixture
def running(broker: Mosquitto | Embedded, base_topic: str, watcher: Watcher) -> Iterator[RunningBridge]:
    config = make_config(base_topic, broker.url)
    rb = start_bridge(config, broker.endpoint)
    yield rb
    rb.stop()
