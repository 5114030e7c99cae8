"""The MQTT link drives paho from the asyncio loop: no network thread, pings, a clean stop."""

import asyncio
import socket
import threading
from collections.abc import Callable

from bridge.mqtt import BrokerSettings, Message, MqttLink
from tests.conftest import TIMEOUT, Mosquitto, Watcher, unique_base

PINGREQ = b"\xc0\x00"


async def eventually(condition: Callable[[], bool], what: str) -> None:
    deadline = asyncio.get_running_loop().time() + TIMEOUT
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {TIMEOUT} s waiting for {what}")
        await asyncio.sleep(0.01)


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
        will = Message(f"{base}/bridge/state", b'{"state":"offline"}', retain=True)
        settings = BrokerSettings("127.0.0.1", mosquitto.port, f"bridge-{base}", will, queue_size=10)
        link = MqttLink(settings, asyncio.get_running_loop(), lambda: None, lambda m: None)
        link.start()
        try:
            await eventually(lambda: link.connected, "the link to connect")
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
