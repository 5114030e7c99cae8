"""The embedded broker with real clients: the bridge's MQTT link, paho subscribers, a restart."""

import asyncio
import gc
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from bridge import broker as broker_module
from bridge import mqtt
from bridge.broker import BrokerError, EmbeddedBroker
from bridge.mqtt import BrokerSettings, Message, MqttLink
from tests.conftest import TIMEOUT, Embedded, Watcher, free_port, unique_base, wait_until

STEP = 0.01


async def eventually(condition: Callable[[], bool], what: str) -> None:
    for _ in range(int(TIMEOUT / STEP)):
        if condition():
            return
        await asyncio.sleep(STEP)
    raise AssertionError(f"timed out after {TIMEOUT} s waiting for {what}")


async def hang_up_on_mqtt5(target: int) -> asyncio.Server:
    """A broker's front door that closes an MQTT 5 CONNECT unanswered and passes 3.1.1 through."""

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.read(65536)
        if len(head) > 8 and head[8] == 5:  # fixed header, length, "MQTT", then the protocol level
            writer.close()
            return
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", target)
        upstream_writer.write(head)
        both = pipe(reader, upstream_writer), pipe(upstream_reader, writer)
        await asyncio.gather(*both, return_exceptions=True)

    return await asyncio.start_server(handle, "127.0.0.1", 0)


def run_with_broker(scenario: Callable[[EmbeddedBroker], Awaitable[None]]) -> None:
    async def main() -> None:
        broker = EmbeddedBroker("127.0.0.1", free_port())
        await broker.start()
        try:
            await scenario(broker)
        finally:
            await broker.stop()

    asyncio.run(main())


@pytest.mark.parametrize("front", ["silent", "hangs_up"])
def test_bridge_link_falls_back_to_mqtt_311(monkeypatch: pytest.MonkeyPatch, front: str) -> None:
    """amqtt neither answers nor hangs up on an MQTT 5 CONNECT with a will; other brokers hang up."""
    monkeypatch.setattr(mqtt, "CONNACK_WAIT", 0.5)
    base = unique_base()

    async def scenario(broker: EmbeddedBroker) -> None:
        port, server = broker.port, None
        if front == "hangs_up":
            server = await hang_up_on_mqtt5(broker.port)
            port = server.sockets[0].getsockname()[1]
        will = Message(f"{base}/bridge/state", b'{"state":"offline"}', retain=True)
        settings = BrokerSettings("127.0.0.1", port, f"bridge-{base}", will, queue_size=100)
        connected: list[bool] = []
        link = MqttLink(settings, asyncio.get_running_loop(), lambda: connected.append(True), lambda m: None)
        assert link.protocol == "5"
        link.start()
        try:
            await eventually(lambda: link.connected, "the link to connect")
            assert link.protocol == "3.1.1"
            assert connected == [True]
            link.publish([Message(f"{base}/bridge/state", b'{"state":"online"}', retain=True)])
            await eventually(lambda: link.published == 1, "the broker's acknowledgement")
        finally:
            link.stop()
            if server is not None:
                server.close()
        watcher = await asyncio.to_thread(Watcher, broker.port, f"{base}/#")
        try:
            payload = await asyncio.to_thread(watcher.wait_for, f"{base}/bridge/state")
            assert payload == {"state": "online"}
        finally:
            watcher.close()

    run_with_broker(scenario)


def test_a_late_wildcard_subscriber_gets_every_retained_message(embedded: Embedded) -> None:
    """Every phone's retained state reaches a new QoS 1 subscriber to `amego/#` (Node-RED's way)."""
    base, count = unique_base(), 200
    publisher = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"pub-{base}")
    publisher.connect("127.0.0.1", embedded.port)
    publisher.loop_start()
    try:
        infos = [publisher.publish(f"{base}/{n}/status", b"{}", qos=1, retain=True) for n in range(count)]
        wait_until(lambda: all(info.is_published() for info in infos), what="the retained messages")
    finally:
        publisher.loop_stop()
        publisher.disconnect()
    late = Watcher(embedded.port, f"{base}/#")
    try:
        wait_until(lambda: len(late.messages) >= count, what=f"{count} retained messages")
        assert all(m.retain for m in late.messages)
        assert len({m.topic for m in late.messages}) == count
    finally:
        late.close()


def test_stop_frees_the_port_and_a_new_broker_can_take_it() -> None:
    port = free_port()

    async def main() -> None:
        for _ in range(2):
            broker = EmbeddedBroker("127.0.0.1", port)
            await broker.start()
            watcher = await asyncio.to_thread(Watcher, port, "x/#")
            await broker.stop()
            await asyncio.to_thread(watcher.close)
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT).close()

    asyncio.run(main())


def test_an_address_in_use_is_named_with_its_key() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        broker = EmbeddedBroker("127.0.0.1", port)
        key = rf"^mqtt\.embedded_listen 127\.0\.0\.1:{port}: cannot listen"
        with pytest.raises(BrokerError, match=key + ": the address is in use"):
            broker.check_address()

        async def start() -> None:
            await broker.start()

        with pytest.raises(BrokerError, match=key):
            asyncio.run(start())


def sockets_left(port: int) -> int:
    """The broker's sockets on `port` whose peer has closed (CLOSE_WAIT): connections it never closed."""
    lines = [
        line for name in ("tcp", "tcp6") for line in Path(f"/proc/net/{name}").read_text().splitlines()[1:]
    ]
    return sum(1 for line in lines if line.split()[1].endswith(f":{port:04X}") and line.split()[3] == "08")


def test_a_connection_that_never_connects_is_closed_and_not_logged_as_an_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A port check and a stray HTTP request each leave no socket behind: amqtt left both open
    until a full garbage collection, which the bridge's frozen objects put off for good."""
    caplog.set_level(logging.ERROR)

    async def scenario(broker: EmbeddedBroker) -> None:
        def probe() -> bool:
            return mqtt.broker_answers("127.0.0.1", broker.port)

        def stray_request() -> bytes:
            with socket.create_connection(("127.0.0.1", broker.port), timeout=TIMEOUT) as conn:
                conn.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                conn.shutdown(socket.SHUT_WR)  # as a client that sent its request and waits
                return conn.recv(100)  # b"" once the broker closes it; a timeout if it never does

        for _ in range(5):
            assert await asyncio.to_thread(probe)
        answers = [await asyncio.to_thread(stray_request) for _ in range(3)]
        assert answers == [b""] * 3
        await eventually(lambda: sockets_left(broker.port) == 0, "the probes' sockets to be closed")

    gc.disable()  # only amqtt itself may close them, not a collection that happens to come by
    try:
        run_with_broker(scenario)
    finally:
        gc.enable()
    assert [r.getMessage() for r in caplog.records if r.name.startswith("amqtt")] == []


def test_a_connection_that_sends_no_connect_is_closed_after_connect_within(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """amqtt waited for a CONNECT for as long as the peer kept the connection open."""
    monkeypatch.setattr(broker_module, "CONNECT_WITHIN", 0.5)

    async def scenario(broker: EmbeddedBroker) -> None:
        def idle() -> tuple[bytes, float]:
            with socket.create_connection(("127.0.0.1", broker.port), timeout=TIMEOUT) as conn:
                began = time.monotonic()
                return conn.recv(100), time.monotonic() - began

        def partial() -> bytes:
            with socket.create_connection(("127.0.0.1", broker.port), timeout=TIMEOUT) as conn:
                conn.sendall(b"\x10\x20\x00\x04MQ")  # the start of a CONNECT, never finished
                return conn.recv(100)

        (data, waited), cut = await asyncio.gather(asyncio.to_thread(idle), asyncio.to_thread(partial))
        assert (data, cut) == (b"", b"")  # both closed by the broker, unanswered
        assert waited < TIMEOUT / 2
        watcher = await asyncio.to_thread(Watcher, broker.port, "x/#")  # a client that connects is fine
        await asyncio.to_thread(watcher.close)

    run_with_broker(scenario)
