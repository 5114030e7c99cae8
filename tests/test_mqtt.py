"""The MQTT link drives paho from the asyncio loop: no network thread, pings, a clean stop."""

import asyncio
import logging
import signal
import socket
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from bridge import mqtt
from bridge.mqtt import BrokerSettings, Inbound, Message, MqttLink
from tests.conftest import TIMEOUT, Mosquitto, Received, Watcher, private_mosquitto, unique_base

PINGREQ = b"\xc0\x00"


async def eventually(condition: Callable[[], bool], what: str) -> None:
    deadline = asyncio.get_running_loop().time() + TIMEOUT
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {TIMEOUT} s waiting for {what}")
        await asyncio.sleep(0.01)


async def started_link(
    port: int,
    base: str,
    queue_size: int,
    on_message: Callable[[Inbound], None] = lambda m: None,
    subscriptions: tuple[str, ...] = (),
    **settings: Any,
) -> MqttLink:
    """A link of its own to the broker at `port` (its will on <base>/bridge/state), connected;
    `settings`: more of BrokerSettings (protocol, tls)."""
    will = Message(f"{base}/bridge/state", b'{"state":"offline"}', retain=True)
    broker = BrokerSettings("127.0.0.1", port, f"bridge-{base}", will, queue_size, subscriptions, **settings)
    link = MqttLink(broker, asyncio.get_running_loop(), lambda: None, on_message)
    link.start()
    try:
        await eventually(lambda: link.connected, "the link to connect")
    except BaseException:
        link.stop()
        raise
    return link


def patterned(sizes: list[int]) -> list[bytes]:
    """Payloads of these sizes, each with bytes of its own, so that a mix-up shows."""
    return [bytes((n + i) % 256 for i in range(size)) for n, size in enumerate(sizes)]


async def counting_pings(target: int, pings: list[int], hung_up: asyncio.Event) -> asyncio.Server:
    """A pipe to the broker that counts the PINGREQs the client sends through it."""

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, count: bool) -> None:
        try:
            while data := await reader.read(65536):
                if count:
                    pings.append(data.count(PINGREQ))
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()
            if count:
                hung_up.set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connect = await reader.read(65536)  # the CONNECT: not counted
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", target)
        upstream_writer.write(connect)
        both = pipe(reader, upstream_writer, True), pipe(upstream_reader, writer, False)
        await asyncio.gather(*both, return_exceptions=True)

    return await asyncio.start_server(handle, "127.0.0.1", 0)


def test_an_idle_link_stays_connected_on_its_pings_with_no_network_thread(mosquitto: Mosquitto) -> None:
    """mosquitto drops a client silent for 1.5 keepalives: the loop must send the pings itself."""
    base = unique_base()
    watcher = Watcher(mosquitto.port, f"{base}/#")

    async def scenario() -> None:
        pings: list[int] = []
        hung_up = asyncio.Event()
        server = await counting_pings(mosquitto.port, pings, hung_up)
        port = server.sockets[0].getsockname()[1]
        will = Message(f"{base}/bridge/state", b'{"state":"offline"}', retain=True)
        settings = BrokerSettings("127.0.0.1", port, f"bridge-{base}", will, queue_size=10, keepalive=1)
        connected: list[bool] = []
        link = MqttLink(settings, asyncio.get_running_loop(), lambda: connected.append(True), lambda m: None)
        link.start()
        try:
            await eventually(lambda: link.connected, "the link to connect")
            assert f"paho-mqtt-client-bridge-{base}" not in [t.name for t in threading.enumerate()]
            await eventually(lambda: sum(pings) >= 3, "three keepalive pings")
            assert link.connected
            assert connected == [True]  # never dropped and reconnected
            link.publish([Message(f"{base}/bridge/state", b'{"state":"online"}', retain=True)])
            await eventually(lambda: link.published == 1, "the broker's acknowledgement")
        finally:
            link.stop()
            async with asyncio.timeout(TIMEOUT):
                await hung_up.wait()  # the DISCONNECT has reached the broker: no last will
            server.close()

    try:
        asyncio.run(scenario())
        assert watcher.wait_for(f"{base}/bridge/state") == {"state": "online"}
        assert [m.json() for m in watcher.on(f"{base}/bridge/state")] == [{"state": "online"}]
    finally:
        watcher.close()


def test_stop_while_the_broker_is_away_gives_back_the_queue_in_order(mosquitto: Mosquitto) -> None:
    """Nothing is lost to a link stopped before it ever connected: take_pending has it all."""
    base = unique_base()

    async def scenario() -> None:
        closed = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
        port = closed.sockets[0].getsockname()[1]
        closed.close()
        await closed.wait_closed()  # nothing listens on `port` now
        will = Message(f"{base}/bridge/state", b"offline", retain=True)
        settings = BrokerSettings("127.0.0.1", port, f"bridge-{base}", will, queue_size=3)
        link = MqttLink(settings, asyncio.get_running_loop(), lambda: None, lambda m: None)
        link.start()
        messages = [Message(f"{base}/n", str(n).encode()) for n in range(3)]
        assert link.publish(messages)
        assert not link.publish([Message(f"{base}/n", b"3")])  # full
        assert link.room() == 0
        await asyncio.sleep(0)  # let the first connect attempt begin
        link.stop()
        assert link.take_pending() == messages
        assert link.queue_length == 0
        assert not link.connected

    asyncio.run(scenario())


def test_a_publish_is_on_the_wire_when_it_returns_with_nagle_off(mosquitto: Mosquitto) -> None:
    """A hit's messages go out before its HTTP answer, not a loop turn later: the subscriber gets
    this one while the loop is still blocked right after `publish`. Nagle would hold back a small
    packet until the broker acknowledges the last one."""
    base = unique_base()
    watcher = Watcher(mosquitto.port, f"{base}/#")

    async def scenario() -> None:
        link = await started_link(mosquitto.port, base, queue_size=10)
        try:
            sock = link._client.socket()
            assert isinstance(sock, socket.socket)
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
            topic = f"{base}/0015650000aa/event"
            for n in range(3):
                link.publish([Message(topic, b'{"n":%d}' % n)])
                # Blocks the loop: only bytes already written can reach the subscriber.
                expected = {"n": n}
                assert watcher.wait_for(topic, expected.__eq__) == expected
        finally:
            link.stop()

    try:
        asyncio.run(scenario())
    finally:
        watcher.close()


@dataclass(frozen=True)
class Outcome:
    receipts: list[str]  # as reported to on_delivered, once every message was answered
    counts: tuple[int, int, int]  # published, refused, still queued
    protocol: str


def publish_all(port: int, base: str, messages: list[Message], protocol: str = "auto") -> Outcome:
    """Publish `messages` through a link of its own, two at a time as a hit does, until all are
    answered (its will goes to <base>/ok/bridge/state)."""

    async def scenario() -> Outcome:
        will = Message(f"{base}/ok/bridge/state", b"offline", retain=True)
        settings = BrokerSettings("127.0.0.1", port, f"bridge-{base}", will, 100, protocol=protocol)
        link = MqttLink(settings, asyncio.get_running_loop(), lambda: None, lambda m: None)
        receipts: list[str] = []
        link.on_delivered = receipts.extend
        link.start()
        try:
            await eventually(lambda: link.connected, "the link to connect")
            for n in range(0, len(messages), 2):
                assert link.publish(messages[n : n + 2])
            async with asyncio.timeout(TIMEOUT):
                await link.flush()
            await eventually(lambda: len(receipts) == len(messages), "every receipt")
        finally:
            link.stop()
        return Outcome(receipts, (link.published, link.refused, link.queue_length), link.protocol)

    return asyncio.run(scenario())


@pytest.mark.parametrize("protocol", ["auto", "3.1.1"])
def test_every_acknowledgement_is_counted_once_in_order(mosquitto: Mosquitto, protocol: str) -> None:
    """PUBACKs of both kinds MQTT 5 sends for a delivery (Success, and No matching subscribers for
    a topic nobody follows) and 3.1.1's plain one: each message is delivered and reported once."""
    base = unique_base()
    watcher = Watcher(mosquitto.port, f"{base}/watched/#")
    messages = [
        Message(f"{base}/{'watched' if n % 3 else 'unwatched'}/{n}", b"%d" % n, receipt=f"r{n}")
        for n in range(60)
    ]

    try:
        outcome = publish_all(mosquitto.port, base, messages, protocol)
        assert outcome.receipts == [f"r{n}" for n in range(60)]
        assert outcome.counts == (60, 0, 0)
        assert outcome.protocol == ("5" if protocol == "auto" else "3.1.1")
        watched = [m.topic for m in messages if "/watched/" in m.topic]
        for topic in watched:
            watcher.wait_for(topic)
        assert [int(m.payload) for t in watched for m in watcher.on(t)] == [
            int(t.rsplit("/", 1)[1]) for t in watched
        ]
    finally:
        watcher.close()


@pytest.fixture
def guarded_mosquitto() -> Iterator[tuple[Mosquitto, str]]:
    """A broker whose ACL lets anonymous clients read everything but publish only under <base>/ok."""
    base = unique_base()
    with private_mosquitto(acl=f"topic read #\ntopic readwrite {base}/ok/#\n") as broker:
        yield broker, base


def test_messages_the_broker_refuses_are_counted_named_and_the_rest_flows(
    guarded_mosquitto: tuple[Mosquitto, str],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """MQTT 5 says Not authorized in the PUBACK: that message is done (it would be refused again),
    counted apart from the delivered ones, and named in one warning, not one per message.
    mosquitto 2.0 also hangs up after each refusal, with more of the burst unread: what was in
    flight goes out again one at a time, so every refusal is read and the rest is delivered."""
    monkeypatch.setattr("bridge.mqtt.RETRY_FIRST", 0.05)  # a reconnect per refusal: keep it short
    broker, base = guarded_mosquitto
    watcher = Watcher(broker.port, f"{base}/#")
    refused = (1, 4)
    messages = [
        Message(f"{base}/{'no' if n in refused else 'ok'}/{n}", b"%d" % n, receipt=f"r{n}") for n in range(7)
    ]

    try:
        with caplog.at_level(logging.WARNING, logger="bridge.mqtt"):
            outcome = publish_all(broker.port, base, messages)
        assert outcome.receipts == [f"r{n}" for n in range(7)]
        assert outcome.counts == (5, 2, 0)
        refusals = [r.getMessage() for r in caplog.records if "refused the message" in r.getMessage()]
        assert refusals == [
            f"MQTT broker refused the message to {base}/no/1: Not authorized (1 refused since "
            "start; is the bridge allowed to publish under its base topic?)"
        ]
        watcher.wait_for(f"{base}/ok/6")  # the last, after every refused one
        first_arrivals = list(dict.fromkeys(m.topic for m in watcher.messages if "/bridge/" not in m.topic))
        assert first_arrivals == [f"{base}/ok/{n}" for n in range(7) if n not in refused]
    finally:
        watcher.close()


@pytest.fixture
def small_mosquitto() -> Iterator[Mosquitto]:
    """A broker that hangs up on any packet over 300 bytes."""
    with private_mosquitto(extra="max_packet_size 300\n") as broker:
        yield broker


@pytest.mark.parametrize("protocol", ["auto", "3.1.1"])
def test_a_message_the_broker_hangs_up_on_is_set_aside_and_the_rest_flows(
    small_mosquitto: Mosquitto,
    protocol: str,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No answer at all, only a closed connection, each time that message is sent: after HANG_UPS
    tries alone it is set aside with an error, and the queue behind it is not stuck."""
    monkeypatch.setattr("bridge.mqtt.RETRY_FIRST", 0.05)
    base = unique_base()
    watcher = Watcher(small_mosquitto.port, f"{base}/#")
    messages = [
        Message(f"{base}/{n}", b'"%s"' % (b"x" * (1000 if n == 1 else 10)), receipt=f"r{n}") for n in range(4)
    ]

    try:
        with caplog.at_level(logging.ERROR, logger="bridge.mqtt"):
            outcome = publish_all(small_mosquitto.port, base, messages, protocol)
        assert outcome.receipts == [f"r{n}" for n in range(4)]
        assert outcome.counts == (3, 1, 0)
        errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) == 1
        assert f"3 times on the message to {base}/1 (1002 bytes)" in errors[0]
        watcher.wait_for(f"{base}/3")
        first_arrivals = list(dict.fromkeys(m.topic for m in watcher.messages if "/bridge/" not in m.topic))
        assert first_arrivals == [f"{base}/{n}" for n in (0, 2, 3)]
    finally:
        watcher.close()


@pytest.mark.parametrize("protocol", ["auto", "3.1.1"])
def test_packets_the_link_encodes_arrive_intact_at_every_size(mosquitto: Mosquitto, protocol: str) -> None:
    """The link writes QoS 1 PUBLISH packets itself (`publish_packet`): payloads on both sides of
    each remaining-length boundary (1, 2 and 3 bytes of it) arrive as sent, and the retained ones
    are kept by the broker as retained."""
    base = unique_base()
    sizes = [0, 1, 100, 127, 128, 16_000, 16_383, 16_384, 70_000]
    messages = [
        Message(f"{base}/{n}", payload, retain=bool(payload), receipt=f"r{n}")
        for n, payload in enumerate(patterned(sizes))
    ]
    watcher = Watcher(mosquitto.port, f"{base}/#")
    try:
        outcome = publish_all(mosquitto.port, base, messages, protocol)
        assert outcome.counts == (len(messages), 0, 0)
        arrived = {m.topic: m.payload for m in _wait_all(watcher, [m.topic for m in messages])}
        assert arrived == {m.topic: m.payload for m in messages}
    finally:
        watcher.close()
    later = Watcher(mosquitto.port, f"{base}/#")  # subscribes after: gets what is retained
    try:
        kept = _wait_all(later, [m.topic for m in messages if m.retain])
        assert {(m.topic, m.payload, m.retain) for m in kept} == {
            (m.topic, m.payload, True) for m in messages if m.retain
        }
    finally:
        later.close()


def _wait_all(watcher: Watcher, topics: list[str]) -> list[Received]:
    """The first message on each of `topics`, once every one of them has one."""
    deadline = threading.Event()
    timer = threading.Timer(TIMEOUT, deadline.set)
    timer.start()
    try:
        while not deadline.is_set():
            with watcher.lock:
                first = {m.topic: m for m in reversed(watcher.messages)}
            if all(t in first for t in topics):
                return [first[t] for t in topics]
            deadline.wait(0.01)
    finally:
        timer.cancel()
    raise AssertionError(f"timed out after {TIMEOUT} s waiting for {topics}")


def test_one_read_takes_every_acknowledgement_waiting(mosquitto: Mosquitto) -> None:
    """paho reads as many packets per `loop_read` as it tracks messages itself, and it tracks none
    of the link's: one PUBACK a loop turn fell behind a busy loop and the queue filled (503s).
    Here the acknowledgements of a whole window (mosquitto's Receive Maximum, 20) wait in the
    socket, and one read takes them all."""
    base = unique_base()
    watcher = Watcher(mosquitto.port, f"{base}/#")

    async def scenario() -> None:
        link = await started_link(mosquitto.port, base, queue_size=1000)
        try:
            client = link._client
            sock = client.socket()
            assert isinstance(sock, socket.socket)
            assert link.publish([Message(f"{base}/{n}", b"%d" % n) for n in range(150)])
            sent = len(link._inflight)
            assert sent == 20
            # The loop stays blocked: nothing reads the socket until the PUBACKs (4 bytes each, MQTT
            # 5 with no reason code) are all there.
            _wait_all(watcher, [f"{base}/{sent - 1}"])
            sock.settimeout(TIMEOUT)
            waited = 0.0
            while len(sock.recv(65536, socket.MSG_PEEK)) < sent * 4 and waited < TIMEOUT:
                threading.Event().wait(0.01)
                waited += 0.01
            sock.setblocking(False)
            assert link.published == 0
            client.loop_read()
            assert link.published == sent
        finally:
            link.stop()

    try:
        asyncio.run(scenario())
    finally:
        watcher.close()


def test_no_more_in_flight_than_the_brokers_receive_maximum() -> None:
    """An MQTT 5 broker's CONNACK may set a Receive Maximum (mosquitto sends its
    max_inflight_messages, 20 by default); a broker may hang up on a client that sends more
    (0x93), though mosquitto 2.0 does not. Here it is 5: the link sends 5, and the rest as they
    are answered, in order. Under 3.1.1 there is no such limit."""
    base = unique_base()
    with private_mosquitto(extra="max_inflight_messages 5\n") as broker:
        watcher = Watcher(broker.port, f"{base}/#")

        async def scenario() -> None:
            link = await started_link(broker.port, base, queue_size=1000)
            try:
                assert link.publish([Message(f"{base}/{n}", b"%d" % n) for n in range(100)])
                # The loop has not run since: what went out went out inside `publish`.
                assert (len(link._inflight), link.queue_length) == (5, 100)
                async with asyncio.timeout(TIMEOUT):
                    await link.flush()
                assert link.published == 100
            finally:
                link.stop()

        try:
            asyncio.run(scenario())
            arrived = [int(m.payload) for m in _wait_all_in_order(watcher, base, 100)]
            assert arrived == list(range(100))
        finally:
            watcher.close()


def _wait_all_in_order(watcher: Watcher, base: str, count: int) -> list[Received]:
    """The messages on <base>/<n> as they arrived, once `count` of them have."""
    _wait_all(watcher, [f"{base}/{n}" for n in range(count)])
    with watcher.lock:
        return [m for m in watcher.messages if m.topic.rsplit("/", 1)[1].isdigit()]


@pytest.mark.parametrize("protocol", ["auto", "3.1.1"])
def test_what_the_broker_sends_arrives_whole_however_it_is_read(mosquitto: Mosquitto, protocol: str) -> None:
    """The link reads the socket 64 kB at a time and parses packets from that (paho read each
    packet in three `recv`s): a burst of small messages, and one larger than a read, all arrive
    whole and in order, with the acknowledgements of what the link sent meanwhile."""
    base = unique_base()
    sent = patterned([10] * 50 + [150_000] + [10] * 5)

    def messages(received: list[Inbound]) -> list[Inbound]:
        return [m for m in received if not m.topic.endswith("/probe")]

    async def scenario() -> list[Inbound]:
        received: list[Inbound] = []
        link = await started_link(
            mosquitto.port, base, 1000, received.append, (f"{base}/in/#",), protocol=protocol
        )
        sender = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"send-{base}")
        try:
            sender.connect("127.0.0.1", mosquitto.port)
            sender.loop_start()
            while not received:  # until the link's subscription is in place
                sender.publish(f"{base}/in/probe", b"", qos=1)
                await asyncio.sleep(0.05)
            for n, payload in enumerate(sent):
                sender.publish(f"{base}/in/{n}", payload, qos=1)
                if n % 10 == 0:
                    link.publish([Message(f"{base}/out/{n}", b"%d" % n)])
            await eventually(lambda: len(messages(received)) == len(sent), "every message")
            await eventually(lambda: link.queue_length == 0, "every acknowledgement")
        finally:
            sender.loop_stop()
            sender.disconnect()
            link.stop()
        return received

    received = messages(asyncio.run(scenario()))
    assert [(m.topic, m.payload) for m in received] == [(f"{base}/in/{n}", p) for n, p in enumerate(sent)]


@pytest.fixture
def tls_mosquitto(monkeypatch: pytest.MonkeyPatch) -> Iterator[Mosquitto]:
    """A broker that speaks only TLS, with a certificate for 127.0.0.1 that this process trusts."""
    with tempfile.TemporaryDirectory(prefix="amego-tls-") as directory:
        certs = Path(directory)
        certs.chmod(0o755)  # mosquitto reads them as its own user
        cert, key = certs / "cert.pem", certs / "key.pem"
        subprocess.run(
            [
                "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                "-keyout", str(key), "-out", str(cert),
                "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
            ],
            check=True,
            capture_output=True,
        )  # fmt: skip
        cert.chmod(0o644)
        key.chmod(0o644)
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # what ssl.create_default_context() trusts
        with private_mosquitto(extra=f"certfile {cert}\nkeyfile {key}\n") as broker:
            yield broker


def test_over_tls_acknowledgements_and_messages_arrive_whole(tls_mosquitto: Mosquitto) -> None:
    """TLS hands over decrypted bytes a record at a time, and may hold some the selector cannot
    see: the link's reads of 64 kB still take every PUBACK and every message, small and large."""
    base = unique_base()
    sent = patterned([10] * 30 + [150_000] + [10] * 5)

    async def scenario() -> tuple[list[Inbound], int]:
        received: list[Inbound] = []
        inbox = (f"{base}/in/#",)
        link = await started_link(tls_mosquitto.port, base, 1000, received.append, inbox, tls=True)
        try:
            # The link sends to itself: its own messages come back through its subscription.
            assert link.publish([Message(f"{base}/in/{n}", payload) for n, payload in enumerate(sent)])
            await eventually(lambda: len(received) == len(sent), "every message")
            await eventually(lambda: link.queue_length == 0, "every acknowledgement")
        finally:
            link.stop()
        return received, link.published

    received, published = asyncio.run(scenario())
    assert published == len(sent)
    assert [(m.topic, m.payload) for m in received] == [(f"{base}/in/{n}", p) for n, p in enumerate(sent)]


def test_what_a_full_socket_does_not_take_goes_out_when_the_broker_reads_again() -> None:
    """A broker that stops reading (SIGSTOP) fills the socket: the link writes what the socket
    takes, keeps the rest, and sends it, in order and whole, once the broker reads again."""
    base = unique_base()
    messages = [
        Message(f"{base}/{n}", payload, receipt=f"r{n}")
        for n, payload in enumerate(patterned([200_000] * 100))  # 20 MB: more than loopback buffers
    ]
    with private_mosquitto() as broker:
        assert broker.proc is not None
        watcher = Watcher(broker.port, f"{base}/#")

        async def scenario() -> tuple[bool, list[str]]:
            link = await started_link(broker.port, base, queue_size=len(messages))
            receipts: list[str] = []
            link.on_delivered = receipts.extend
            assert broker.proc is not None
            broker.proc.send_signal(signal.SIGSTOP)
            try:
                for n in range(0, len(messages), 2):
                    assert link.publish(messages[n : n + 2])
                held_back = link._client.want_write()  # bytes the socket would not take, kept
            finally:
                broker.proc.send_signal(signal.SIGCONT)
            try:
                async with asyncio.timeout(TIMEOUT):
                    await link.flush()
                await eventually(lambda: len(receipts) == len(messages), "every receipt")
            finally:
                link.stop()
            return held_back, receipts

        try:
            held_back, receipts = asyncio.run(scenario())
            assert held_back
            assert receipts == [m.receipt for m in messages]
            arrived = _wait_all(watcher, [m.topic for m in messages])
            assert [m.payload for m in arrived] == [m.payload for m in messages]
        finally:
            watcher.close()


def test_a_topic_is_checked_once_and_a_bad_one_refused_every_time() -> None:
    client = mqtt._Client(CallbackAPIVersion.VERSION2, client_id="topics")
    for _ in range(2):  # the second time from what the first kept
        assert client.publishable("amego/001565aabbcc/call") == b"amego/001565aabbcc/call"
        assert client.publishable("amego/ü/call") == "amego/ü/call".encode()
        for bad in ("", "amego/+/call", "amego/#", "a" * 65536):
            with pytest.raises(ValueError, match="topic"):
                client.publishable(bad)
    for n in range(mqtt.PUBLISHABLE_KEPT + 10):
        client.publishable(f"amego/{n}/call")
    assert len(mqtt._PUBLISHABLE) <= mqtt.PUBLISHABLE_KEPT  # bounded, whatever ids phones send
    assert client.publishable("amego/7/call") == b"amego/7/call"
