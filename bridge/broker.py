"""The embedded MQTT broker (amqtt), for a bridge with no broker of its own to talk to.

It runs on the bridge's event loop, speaks MQTT 3.1.1 only (it refuses MQTT 5 clients), keeps
retained messages in memory, and lets anyone who reaches its address in without a password.
Nothing outside this module touches amqtt.
"""

import asyncio
import errno
import logging
import socket
from importlib.metadata import version

from amqtt.adapters import ReaderAdapter, WriterAdapter
from amqtt.broker import Broker
from amqtt.errors import AMQTTError
from amqtt.errors import BrokerError as AmqttError

from bridge.mqtt import Endpoint

log = logging.getLogger(__name__)

NAME = f"amqtt {version('amqtt')}"


class BrokerError(Exception):
    """The embedded broker cannot start; the message names the address and the reason."""


def connect_host(host: str) -> str:
    """Where a client on this machine reaches a listener bound to `host`."""
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "::1"
    return host


CLOSE_WITHIN = 5.0  # seconds for a finished connection's last bytes to go out before it is cut
CONNECT_WITHIN = 10.0  # seconds for a new connection's CONNECT packet to come in whole


class _Broker(Broker):  # type: ignore[misc]  # amqtt has no type hints
    """amqtt's broker, closing every connection it has finished with.

    amqtt leaves a connection open when its first packet never came or was not a CONNECT: a port
    check (`nc -z`, a monitor's TCP probe, `broker_answers`), a stray HTTP request. Only a full
    garbage collection closed those, and the bridge freezes what is alive for the collector
    (`bridge/collector.py`): each such probe kept a file descriptor until the bridge stopped.
    Nor does amqtt give up on a connection that never sends its CONNECT: the standard says a
    server should close it after a reasonable time, and here that is `CONNECT_WITHIN`.
    """

    async def _initialize_client_session(
        self, reader: ReaderAdapter, writer: WriterAdapter, remote_address: str, remote_port: int
    ) -> object:
        try:
            async with asyncio.timeout(CONNECT_WITHIN):
                return await super()._initialize_client_session(reader, writer, remote_address, remote_port)
        except TimeoutError as err:  # amqtt then gives the connection up, and it is closed below
            raise AMQTTError(f"no CONNECT within {CONNECT_WITHIN:g} s") from err

    async def _client_connected(
        self, listener_name: str, reader: ReaderAdapter, writer: WriterAdapter
    ) -> None:
        try:
            await super()._client_connected(listener_name, reader, writer)
        finally:
            await _close(writer)


class _QuietProbes(logging.Filter):
    """amqtt logs an ERROR for each connection closed before its first packet: a port check, not
    an error (a monitor probing the port every minute would fill the log and `bridge/log`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno == logging.ERROR and str(record.msg).startswith("No data from "))


async def _close(writer: WriterAdapter) -> None:
    """Close a connection amqtt is done with (closing one twice does nothing); cut it when its
    peer does not take what is left to send."""
    try:
        async with asyncio.timeout(CLOSE_WITHIN):
            await writer.close()
    except (OSError, TimeoutError):  # reset by the peer, or it does not read
        stream = getattr(writer, "_writer", None)  # amqtt's StreamWriterAdapter: the asyncio writer
        if isinstance(stream, asyncio.StreamWriter):
            stream.transport.abort()


class EmbeddedBroker:
    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._broker: Broker | None = None

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"mqtt://{host}:{self.port} (embedded, {NAME})"

    @property
    def endpoint(self) -> Endpoint:
        return Endpoint(connect_host(self.host), self.port, protocol="3.1.1")  # amqtt refuses MQTT 5

    @property
    def loopback_only(self) -> bool:
        return self.host in ("127.0.0.1", "::1", "localhost") or self.host.startswith("127.")

    def check_address(self) -> None:
        """BrokerError now, rather than at start, when the address cannot be listened on."""
        try:
            infos = socket.getaddrinfo(self.host or None, self.port, type=socket.SOCK_STREAM)
            family, kind, proto, _, address = infos[0]
            with socket.socket(family, kind, proto) as probe:
                # Like the listener itself: a port in TIME_WAIT is free to take.
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                probe.bind(address)
        except OSError as err:
            raise BrokerError(self._cannot_listen(err)) from err

    async def start(self) -> None:
        # amqtt (and `transitions`, its state machines) log every connection and state change at
        # INFO; the bridge's own line says which broker is in use.
        # At WARNING it also tells of each MQTT 5 client it turns away, and of the bridge's last
        # will at every stop.
        logging.getLogger("transitions").setLevel(max(logging.WARNING, logging.getLogger().level))
        logging.getLogger("amqtt").setLevel(max(logging.ERROR, logging.getLogger().level))
        amqtt_broker = logging.getLogger("amqtt.broker")
        if not any(isinstance(f, _QuietProbes) for f in amqtt_broker.filters):
            amqtt_broker.addFilter(_QuietProbes())
        broker = _Broker(
            {
                # amqtt splits on the last ":" and cannot take "[::1]:1883".
                "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
                # Only anonymous access: no $SYS topics every 20 s, no packet logging.
                "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
            }
        )
        try:
            await broker.start()
        except AmqttError as err:
            cause = err.__cause__
            raise BrokerError(self._cannot_listen(cause if isinstance(cause, OSError) else err)) from err
        self._broker = broker

    async def stop(self) -> None:
        broker, self._broker = self._broker, None
        if broker is None:
            return
        await forwarded(broker, within=1.0)
        try:
            async with asyncio.timeout(5.0):
                await broker.shutdown()
        except TimeoutError:
            log.warning("embedded MQTT broker did not stop within 5 s")

    def _cannot_listen(self, err: Exception) -> str:
        where = f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"
        if isinstance(err, OSError) and err.errno == errno.EADDRINUSE:
            reason = "the address is in use (another broker? set mqtt.url to use it)"
        elif isinstance(err, OSError) and err.errno == errno.EACCES:
            reason = "permission denied (ports below 1024 need privileges)"
        else:
            reason = str(err)
        return f"mqtt.embedded_listen {where}: cannot listen: {reason}"


async def forwarded(broker: Broker, within: float) -> None:
    """Wait, at most `within` seconds, until the broker has sent on everything it took.

    amqtt acknowledges a message before it forwards it, and its shutdown drops what it has not
    forwarded yet: without this, subscribers would miss the bridge's last words (`offline`).
    """
    step = 0.01
    for _ in range(int(within / step)):
        if broker._broadcast_queue.empty() and all(task.done() for task in broker._tasks_queue):
            return
        await asyncio.sleep(step)
