"""The one paho adapter: connection, last will, an ordered bounded publish queue, subscriptions.

Nothing outside this module touches paho. paho has no thread of its own: it runs on the asyncio
loop through its external-loop API. The loop watches its socket (`add_reader` → `loop_read`;
`add_writer` → `loop_write` while paho says it has bytes to send), `loop_misc` runs about once a
second for keepalive pings, and `MqttLink` connects and reconnects by itself. A network thread of
paho's own fought the loop for the GIL under load and fell behind it (issue 9). Only the
blocking part of a connect (DNS, TCP, the TLS handshake) runs on a worker thread, while nothing
else touches that client.

paho calls our callbacks from inside `loop_read`/`loop_write`, holding its own locks and halfway
through its bookkeeping, so they only note what happened; the service's callbacks
(`on_connected`, `on_message`, `on_delivered`) and the next publishes run just after, through
`call_soon`.

Delivery: messages wait in our own bounded queue and go out a window at a time, only while
connected. QoS 1 messages (the default) are encoded by `_Client.send_qos1` and acknowledged
straight to us; others go through paho's `publish`. paho would resend what it holds *after*
anything published during a reconnect, breaking order; so whenever the socket closes we take back
what is unacknowledged (ours, and paho's through `drop_out_messages`) and put it at the front of
our queue. Order is kept, and a message is at worst sent twice (at-least-once).

A broker may hang up because of one message: mosquitto 2.0 does after each it refuses under its
ACL (eclipse-mosquitto/mosquitto#2579), and brokers close the connection on a packet over their
size limit. Resending the whole window would drop the next connection the same way, often before
the acknowledgements in flight are read. So after a connection is lost, what was in flight goes
out again one message at a time: a refused message is answered and done, and one the broker hangs
up on HANG_UPS times running, alone, is set aside with an error.
"""

import asyncio
import contextlib
import logging
import socket
import ssl
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

import paho.mqtt._packet as paho_packet
import paho.mqtt.client as paho
from paho.mqtt.client import time_func
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from bridge.frozen import frozen

log = logging.getLogger(__name__)

# Messages sent and not yet acknowledged, at most; fewer when an MQTT 5 broker's CONNACK gives a
# smaller Receive Maximum (mosquitto sends 20 by default; a broker may hang up on more, 0x93).
WINDOW = 200
# Seconds an MQTT 5 CONNECT may go unanswered before we retry with 3.1.1: some 3.1.1-only
# brokers (amqtt, given a last will) neither answer nor hang up.
CONNACK_WAIT = 5.0
# Seconds between warnings that the broker refused messages (MQTT 5 says so in its PUBACK).
REFUSAL_WARNING_EVERY = 60.0
# Connections a broker may close on the same message, sent alone, before that message is set aside.
HANG_UPS = 3
# Bytes read from the broker's socket at once.
READ_SIZE = 65536
# Seconds between paho's housekeeping calls: keepalive pings, a broker gone silent.
MISC_EVERY = 1.0
# Seconds before connecting again, doubling from the first to the last.
RETRY_FIRST = 1.0
RETRY_LAST = 30.0


@frozen
class Message:
    topic: str
    payload: bytes
    retain: bool = False
    qos: int = 1
    receipt: str | None = None  # reported to `on_delivered` once the broker has the message (batched)


@dataclass(frozen=True, slots=True)
class Inbound:
    topic: str
    payload: bytes
    retain: bool


@dataclass(frozen=True, slots=True)
class BrokerSettings:
    host: str
    port: int
    client_id: str
    will: Message
    queue_size: int
    subscriptions: tuple[str, ...] = ()
    username: str | None = None
    password: str | None = None
    tls: bool = False
    keepalive: int = 60
    protocol: str = "auto"  # "auto": MQTT 5, else 3.1.1 when the broker refuses 5


# The PUBACKs that say "delivered", by the reason code byte MQTT 5 may add to the packet
# identifier: 0 Success, 16 No matching subscribers. A PUBACK without one is Success.
_DELIVERED = {code: ReasonCode(PacketTypes.PUBACK, identifier=code) for code in (0, 16)}
_NO_PROPERTIES = Properties(PacketTypes.PUBACK)  # type: ignore[no-untyped-call]
_PUBLISH = 0x30
_PUBACK = 0x40


def _delivery(size: int, code: int) -> ReasonCode | None:
    """The reason of a PUBACK of `size` bytes after its fixed header (`code`: its third byte) when
    it says delivered and carries nothing more, else None (paho's decoder reads it)."""
    if size == 2:
        return _DELIVERED[0]
    return _DELIVERED.get(code) if size == 3 else None


def publish_packet(topic: bytes, payload: bytes, retain: bool, mid: int, v5: bool) -> bytes:
    """A QoS 1 PUBLISH packet (MQTT 3.1.1 §3.3, MQTT 5 §3.3 with no properties)."""
    variable = len(topic).to_bytes(2, "big") + topic + mid.to_bytes(2, "big") + (b"\0" if v5 else b"")
    remaining = len(variable) + len(payload)
    header = bytearray((_PUBLISH | 2 | retain,))
    while True:  # the remaining length, 7 bits a byte, least significant first
        remaining, digit = divmod(remaining, 128)
        header.append(digit | 0x80 if remaining else digit)
        if not remaining:
            break
    return bytes(header) + variable + payload


# Topics `publishable` has checked (a topic is valid or not whatever the connection).
PUBLISHABLE_KEPT = 4096
_PUBLISHABLE: dict[str, bytes] = {}


class _Client(paho.Client):
    """paho's client, with the everyday QoS 1 message sent and acknowledged in a few steps.

    For each message `publish` builds an `MQTTMessage`, an `MQTTMessageInfo` with its own lock and
    condition, and a packet that goes out in a `send` of its own; for each PUBACK it builds fresh
    `ReasonCode` and `Properties` objects (each copies a table of names). Together that was about a
    fifth of a hit's CPU (bench/README.md, "Known costs"). `MqttLink` keeps its own record of what
    is in flight and sends again after a reconnect itself, so paho's is not needed for these:

    - `send_qos1` encodes a batch of QoS 1 PUBLISH packets, with packet ids from paho's counter,
      and writes them in one `send` when paho has nothing waiting; else, and whatever the socket
      did not take, behind paho's own output (order holds).
    - The socket is read 64 kB at a time into an inbox (`_sock_recv`). The PUBACKs of these
      messages that lead it are taken in place (`_take_pubacks`); one paho's reader has read goes
      to `_handle_pubackcomp`. Either way a PUBACK that says delivered and carries nothing more
      (`_delivery`) is answered with shared objects, any other through paho's own decoder.
      PUBACKs of what paho sent itself, and PUBCOMPs, take paho's own path.

    paho is pinned in pyproject.toml; tests/test_mqtt.py covers both protocol versions, refusals
    and reconnects.
    """

    ours: "OrderedDict[int, Message]"  # the link's messages in flight, by packet id
    # What was read from the socket and not yet parsed: paho reads a packet's first byte, its
    # length, and the rest in three `recv`s; a PUBACK is 4 bytes. One `recv` takes them all now.
    _inbox: bytes = b""
    _inbox_at = 0
    _inbox_of: object = None  # the socket the inbox came from
    _held: bytes | OSError | None = None  # what `_fill` met instead of bytes, for paho's next read

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        """paho's, reading as many packets as are due (paho counts only the messages it tracks
        itself, and would read one PUBACK of ours per call), and any already in the inbox. Between
        packets, the PUBACKs of ours that lead the inbox are taken in place (`_take_pubacks`)."""
        if self._sock is None:
            return MQTTErrorCode.MQTT_ERR_NO_CONN
        due = max(1, len(self.ours) + len(self._out_messages) + len(self._in_messages))
        while due > 0 or self.inbox_holds():
            if self._sock is None:
                return MQTTErrorCode.MQTT_ERR_NO_CONN
            if self._in_packet["command"] == 0 and self.ours:  # between packets, ours in flight
                if not self.inbox_holds():
                    try:
                        self._fill()
                    except BlockingIOError:
                        break  # nothing more to read, as paho's MQTT_ERR_AGAIN
                taken = self._take_pubacks()
                if taken:
                    due -= taken
                    continue
            rc = self._packet_read()
            if rc > 0:
                return self._loop_rc_handle(rc)
            if rc == MQTTErrorCode.MQTT_ERR_AGAIN:
                break
            due -= 1
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    def inbox_holds(self) -> bool:
        return self._inbox_of is self._sock and self._inbox_at < len(self._inbox)

    def _sock_recv(self, bufsize: int) -> bytes:
        if self._held is None and not self.inbox_holds():
            self._fill()  # BlockingIOError when there is nothing
        held = self._held
        if held is not None:  # a closed socket or an error: paho reports it as before
            self._held = None
            if isinstance(held, BaseException):
                raise held
            return held  # b"": closed
        start = self._inbox_at
        self._inbox_at = start + bufsize
        return self._inbox[start : start + bufsize]

    def _fill(self) -> None:
        """Read what the socket holds into the inbox (BlockingIOError: nothing). A closed socket or
        an error is held for paho's read (`_sock_recv`), which reports it as paho's own would."""
        try:
            data = super()._sock_recv(READ_SIZE)
        except BlockingIOError:
            raise
        except OSError as err:  # ssl's errors too
            self._held = err
            return
        self._inbox, self._inbox_at, self._inbox_of = data, 0, self._sock
        if not data:
            self._held = data

    def _take_pubacks(self) -> int:
        """The PUBACKs for the link's messages that lead the inbox, each straight to `on_publish`
        (2 bytes of packet id, or 3 whose reason code says delivered); how many. Anything else,
        or a packet not all read yet, is left to paho's reader: 4 of paho's calls and 3 slices a
        PUBACK were about a fifth of a message's cost."""
        inbox, at = self._inbox, self._inbox_at
        end = len(inbox)
        ours, theirs = self.ours, self._out_messages
        taken = 0
        while at + 4 <= end and inbox[at] == _PUBACK:
            size = inbox[at + 1]
            if at + 2 + size > end:
                break  # not all read yet
            reason = _delivery(size, inbox[at + 4] if size == 3 else 0)
            mid = inbox[at + 2] << 8 | inbox[at + 3]
            if reason is None or mid not in ours or mid in theirs:
                break
            at += 2 + size
            self._inbox_at = at  # first: the callback may publish (it never reads)
            taken += 1
            self._acknowledged(mid, reason, _NO_PROPERTIES)
        if taken:
            with self._msgtime_mutex:
                self._last_bytes_received = time_func()
        return taken

    def publishable(self, topic: str) -> bytes:
        """`topic` encoded, or ValueError as paho's `publish` gives it (empty, a wildcard, too long).
        The phones' few topics come again and again: each is checked once."""
        encoded = _PUBLISHABLE.get(topic)
        if encoded is not None:
            return encoded
        if not topic:
            raise ValueError("Invalid topic.")
        encoded = topic.encode()
        self._raise_for_invalid_topic(encoded)
        if len(_PUBLISHABLE) >= PUBLISHABLE_KEPT:
            _PUBLISHABLE.clear()
        _PUBLISHABLE[topic] = encoded
        return encoded

    def send_qos1(self, messages: Sequence[tuple[int, bytes, "Message"]], v5: bool) -> None:
        """(packet id, topic as `publishable` gave it, message) each, in one write: straight to the
        socket when paho has nothing waiting to go out, else (and what the socket did not take)
        behind it on paho's output, which `MqttLink` writes at once or when the socket has room.
        An error is left for paho's writer to meet and handle."""
        data = b"".join(publish_packet(topic, m.payload, m.retain, mid, v5) for mid, topic, m in messages)
        if not self._out_packet and self._sock is not None:
            try:
                sent = self._sock_send(data)
            except OSError:  # BlockingIOError (a full buffer) among them
                sent = 0
            if sent:
                with self._msgtime_mutex:
                    self._last_msg_out = time_func()
                if sent == len(data):
                    return
                data = data[sent:]
        self._packet_queue(_PUBLISH | 2, data, 0, 1)

    def _handle_pubackcomp(self, cmd: Literal["PUBACK", "PUBCOMP"]) -> MQTTErrorCode:
        packet = self._in_packet["packet"]
        size = len(packet)
        if cmd == "PUBACK" and size >= 2:
            mid = packet[0] << 8 | packet[1]
            with self._out_message_mutex:
                theirs = mid in self._out_messages
            if not theirs:
                reason, properties = _delivery(size, packet[2] if size == 3 else 0), _NO_PROPERTIES
                if reason is None:
                    decoded = paho_packet.decode_puback(self._in_packet["command"], packet, self._protocol)
                    reason, properties = decoded.reason, decoded.properties
                self._acknowledged(mid, reason, properties)
                return MQTTErrorCode.MQTT_ERR_SUCCESS
        return super()._handle_pubackcomp(cmd)

    def _acknowledged(self, mid: int, reason: ReasonCode, properties: Properties) -> None:
        """A PUBACK of the link's, straight to `on_publish`."""
        on_publish = self.on_publish
        if on_publish is not None:
            on_publish(self, self._userdata, mid, reason, properties)  # type: ignore[call-arg]


class MqttLink:
    """Owned by the asyncio loop's thread: the queue and the paho client are touched only there
    (but for the blocking connect, see `_open`), so no locks."""

    def __init__(
        self,
        settings: BrokerSettings,
        loop: asyncio.AbstractEventLoop,
        on_connected: Callable[[], None],
        on_message: Callable[[Inbound], None],
    ) -> None:
        self.settings = settings
        self._loop = loop
        self._on_connected = on_connected
        self._on_message = on_message
        self._pending: deque[Message] = deque()
        self._inflight: OrderedDict[int, Message] = OrderedDict()
        self._window = WINDOW  # for this connection: the broker's Receive Maximum may be lower
        self._receipts: list[str] = []  # acknowledged, not yet reported to on_delivered
        self._settle_due = False
        self._publishing = False  # inside `publish`, which writes what paho queued at its end
        self._writer = False  # the loop watches the socket for room to write (a full buffer)
        self._ready = False
        # The client whose socket the loop watches, and what tells `_serve` it closed.
        self._watched: paho.Client | None = None
        self._closed: asyncio.Future[None] = loop.create_future()
        # What the current connection attempt has seen.
        self._opened = False
        self._got_connack = False
        self._was_up = False
        self._refused_version = False
        self._v5 = settings.protocol != "3.1.1"
        self._stopping = False
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._empty = asyncio.Event()
        self._drain_waiters: list[tuple[int, asyncio.Future[None]]] = []  # (level, waiter): `drained_to`
        self.on_delivered: Callable[[list[str]], None] | None = None
        self.on_disconnected: Callable[[], None] | None = None  # a connection that was up closed
        # Messages queued while there is no connection, and the queue found empty once all that
        # was queued is acknowledged: for whoever keeps the queue where a kill cannot reach it.
        self.on_queued_away: Callable[[Sequence[Message]], None] | None = None
        self.on_emptied: Callable[[], None] | None = None
        self.published = 0  # acknowledged as delivered
        self.refused = 0  # acknowledged with a failure, e.g. Not authorized by the broker's ACL
        self._refusals_quiet_until = 0.0
        # Acknowledgements still to wait for one message at a time, after a lost connection.
        self._careful = 0
        self._suspect: Message | None = None  # the message last in flight alone when the broker hung up
        self._hang_ups = 0  # how many times running it did
        self._client: _Client = self._make_client()

    # ---- public ---------------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._ready

    @property
    def protocol(self) -> str:
        return "5" if self._v5 else "3.1.1"

    @property
    def queue_length(self) -> int:
        return len(self._pending) + len(self._inflight)

    def room(self) -> int:
        """How many more messages the queue takes before it refuses."""
        return self.settings.queue_size - self.queue_length

    def publish(self, messages: Sequence[Message], *, force: bool = False) -> bool:
        """Queue all of `messages`, in order, or none of them (False: the queue is full).

        `force` ignores the bound: for the few messages that restate retained state.
        """
        if not force and self.queue_length + len(messages) > self.settings.queue_size:
            return False
        self._pending.extend(messages)
        if not self._ready and self.on_queued_away is not None:
            self.on_queued_away(messages)
        self._publishing = True
        try:
            self._drain()
        finally:
            self._publishing = False
        client = self._watched
        if client is not None and client.want_write():
            # Out now, not a loop turn later: the hit's HTTP answer is sent after this.
            self._write(client, client.socket())
        return True

    def start(self) -> None:
        self._task = self._loop.create_task(self._keep_connected())

    async def flush(self) -> None:
        """Wait until everything queued is acknowledged (bound it with asyncio.timeout)."""
        if self.queue_length:
            self._empty.clear()
            await self._empty.wait()

    async def drained_to(self, level: int) -> None:
        """Wait until at most `level` messages are queued or unacknowledged: for whoever has many
        to publish, a batch at a time, so that they never sit in memory all at once."""
        if self.queue_length <= level:
            return
        waiter = self._loop.create_future()
        self._drain_waiters.append((level, waiter))
        await waiter

    def pending(self) -> list[Message]:
        """Everything not yet acknowledged, in order, left in the queue."""
        return [*self._inflight.values(), *self._pending]

    def take_pending(self) -> list[Message]:
        """Everything not yet acknowledged, in order, removed from the queue (to persist it)."""
        messages = [*self._inflight.values(), *self._pending]
        self._inflight.clear()
        self._pending.clear()
        self._careful = 0
        return messages

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._watched is not None:
            self._hang_up(self._watched)
        # A connect still under way closes its own socket (`_open`).

    # ---- the connection -------------------------------------------------------------------------

    async def _keep_connected(self) -> None:
        """Connect, serve the connection until it closes, and again, until stopped."""
        delay = RETRY_FIRST
        while not self._stopping:
            client = self._client
            self._opened = self._got_connack = self._was_up = self._refused_version = False
            try:
                await self._connect_once(client)
            except (OSError, ValueError) as exc:  # ssl's certificate errors are ValueErrors
                log.warning(
                    "MQTT broker %s:%s unreachable (%s); retrying in %.0f s", *self._where(), exc, delay
                )
            except Exception:
                log.exception("MQTT connection to %s:%s failed; retrying in %.0f s", *self._where(), delay)
                self._drop(client)
            if self._stopping:
                return
            if self._opened and self._v5 and (self._refused_version or not self._got_connack):
                self._fall_back()
                continue
            if self._was_up:
                delay = RETRY_FIRST
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)
            delay = min(delay * 2, RETRY_LAST)

    async def _connect_once(self, client: paho.Client) -> None:
        await asyncio.to_thread(self._open, client)
        if self._stopping:
            self._abandon(client)
            return
        self._opened = True
        await self._serve(client)

    def _open(self, client: paho.Client) -> None:
        """On a worker thread: paho's connect blocks on DNS, TCP and TLS. Nothing else touches
        `client` meanwhile: it is not watched yet, and `_ready` is False, so nothing publishes."""
        client.reconnect()
        if self._stopping:  # stopped meanwhile: perhaps nobody awaits this any more
            self._abandon(client)

    async def _serve(self, client: paho.Client) -> None:
        """Watch a fresh connection's socket until it closes, with paho's housekeeping."""
        closed = self._watch(client)
        opened = self._loop.time()
        while not closed.done():
            wait = MISC_EVERY
            if self._v5 and not self._got_connack:
                wait = min(wait, max(0.0, opened + CONNACK_WAIT - self._loop.time()))
            await asyncio.wait({closed}, timeout=wait)
            if closed.done():
                return
            client.loop_misc()
            if self._v5 and not self._got_connack and self._loop.time() - opened >= CONNACK_WAIT:
                self._hang_up(client)  # `_keep_connected` then falls back to 3.1.1

    def _watch(self, client: paho.Client) -> asyncio.Future[None]:
        self._closed = closed = self._loop.create_future()
        sock = client.socket()
        if sock is None:
            closed.set_result(None)
            return closed
        self._watched = client
        if isinstance(sock, socket.socket):
            # Each MQTT packet goes out as written: Nagle would hold one back until the broker
            # acknowledges the last (tens of ms when its delayed ACK kicks in).
            with contextlib.suppress(OSError):  # not a TCP socket
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._loop.add_reader(sock, self._read, client, sock)
        # Sends the CONNECT; paho then asks for the writer through its callbacks when it needs it.
        client.loop_write()
        return closed

    def _read(self, client: paho.Client, sock: Any) -> None:
        client.loop_read()
        # TLS may hold decrypted bytes that the selector cannot see.
        while isinstance(sock, ssl.SSLSocket) and sock.pending() and client.socket() is sock:
            client.loop_read()

    def _unwatch(self, client: paho.Client, sock: Any) -> None:
        if self._watched is not client:
            return
        self._watched = None
        self._loop.remove_reader(sock)
        self._loop.remove_writer(sock)
        self._writer = False
        if self._ready and self.on_disconnected is not None:
            self._loop.call_soon(self.on_disconnected)
        self._ready = False
        # Before anything else is published: what paho holds unacknowledged goes out again from
        # our queue, ahead of everything queued after it.
        client.drop_out_messages()
        unacknowledged = list(self._inflight.values())
        self._inflight.clear()
        if self._careful and len(unacknowledged) == 1 and self._hung_up_on(unacknowledged[0]):
            unacknowledged.clear()
            self._careful -= 1
        self._careful = self._careful or len(unacknowledged)
        self._pending.extendleft(reversed(unacknowledged))
        if not self._closed.done():
            self._closed.set_result(None)

    def _hung_up_on(self, msg: Message) -> bool:
        """The broker closed the connection while `msg`, sent alone, waited for its answer: True
        when that was the last time allowed, and `msg` is set aside."""
        self._hang_ups = self._hang_ups + 1 if self._suspect is msg else 1
        self._suspect = msg
        if self._hang_ups < HANG_UPS:
            return False
        self._suspect, self._hang_ups = None, 0
        self.refused += 1
        log.error(
            "MQTT broker %s:%s closed the connection %d times on the message to %s (%d bytes), "
            "sent alone; it is set aside (the broker's log says why: too large? not allowed?)",
            *self._where(),
            HANG_UPS,
            msg.topic,
            len(msg.payload),
        )
        self._done(msg)
        return True

    def _hang_up(self, client: paho.Client) -> None:
        client.disconnect()
        client.loop_write()  # the DISCONNECT goes out now, and paho closes the socket
        self._drop(client)  # if the broker takes nothing more: close it regardless

    def _drop(self, client: paho.Client) -> None:
        sock = client.socket()
        if sock is not None:
            self._unwatch(client, sock)
            sock.close()

    def _abandon(self, client: paho.Client) -> None:
        sock = client.socket()
        if sock is not None:
            sock.close()

    def _fall_back(self) -> None:
        log.warning("MQTT broker %s:%s does not speak MQTT 5; using 3.1.1", *self._where())
        self._v5 = False
        self._client = self._make_client()

    def _connected(self, client: paho.Client) -> None:
        if self._watched is not client or not client.is_connected():
            return
        self._ready = True
        self._drain()
        self._on_connected()

    # ---- the queue ------------------------------------------------------------------------------

    def _drain(self) -> None:
        window = 1 if self._careful else self._window
        client = self._client
        batch: list[tuple[int, bytes, Message]] = []  # QoS 1 messages, sent together
        while self._ready and self._pending and len(self._inflight) < window:
            msg = self._pending[0]
            if msg.qos == 1:
                if client.socket() is None:  # closed: `_unwatch` is on its way
                    self._ready = False
                    break
                topic = client.publishable(msg.topic)
                mid = client._mid_generate()
                self._pending.popleft()
                self._inflight[mid] = msg
                batch.append((mid, topic, msg))
                continue
            if batch:
                client.send_qos1(batch, self._v5)
                batch = []
            info = client.publish(msg.topic, msg.payload, qos=msg.qos, retain=msg.retain)
            if info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
                self._pending.popleft()
                self._inflight[info.mid] = msg
            elif info.rc == MQTTErrorCode.MQTT_ERR_NO_CONN:
                # paho kept it; when the socket closes, `_unwatch` hands it back to the queue.
                self._pending.popleft()
                self._inflight[info.mid] = msg
                self._ready = False
            else:
                log.error("MQTT publish to %s refused by the client: %s", msg.topic, info.rc)
                break
        if batch:
            client.send_qos1(batch, self._v5)

    def _settle(self) -> None:
        """After paho has read a batch of acknowledgements: report them, hand paho the next."""
        self._settle_due = False
        self._drain()
        receipts, self._receipts = self._receipts, []
        if receipts and self.on_delivered is not None:
            self.on_delivered(receipts)
        if not self.queue_length:
            self._empty.set()
            if self.on_emptied is not None:
                self.on_emptied()
        if self._drain_waiters:
            waiting = []
            for level, waiter in self._drain_waiters:
                if waiter.done():
                    continue  # cancelled
                if self.queue_length <= level:
                    waiter.set_result(None)
                else:
                    waiting.append((level, waiter))
            self._drain_waiters = waiting

    def _where(self) -> tuple[str, int]:
        return self.settings.host, self.settings.port

    # ---- paho's callbacks (inside paho's loop_read/loop_write/loop_misc, on the loop thread) ----

    def _make_client(self) -> _Client:
        s = self.settings
        protocol = MQTTProtocolVersion.MQTTv5 if self._v5 else MQTTProtocolVersion.MQTTv311
        client = _Client(
            CallbackAPIVersion.VERSION2,
            client_id=s.client_id,
            protocol=protocol,
            clean_session=None if self._v5 else True,
            # Else paho reconnects by itself, blocking, from inside loop_read.
            reconnect_on_failure=False,
        )
        # No limit of paho's own (it holds only what is not QoS 1): our queue keeps to the window.
        # With a limit, paho walks every message it holds on each PUBACK, looking for one to send.
        client.ours = self._inflight
        client.max_inflight_messages_set(0)
        client.max_queued_messages_set(0)
        client.will_set(s.will.topic, s.will.payload, qos=s.will.qos, retain=s.will.retain)
        if s.username:
            client.username_pw_set(s.username, s.password)
        if s.tls:
            client.tls_set_context(ssl.create_default_context())
        client.on_connect = self._handle_connect
        client.on_disconnect = self._handle_disconnect
        client.on_publish = self._handle_publish
        client.on_message = self._handle_message
        client.on_socket_close = self._handle_socket_close
        client.on_socket_register_write = self._handle_register_write
        client.on_socket_unregister_write = self._handle_unregister_write
        client.connect_async(s.host, s.port, keepalive=s.keepalive)  # only sets where to connect
        return client

    def _handle_register_write(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        # Also called on the worker thread during a connect, before the socket is watched:
        # `_watch` then writes the CONNECT itself.
        if self._watched is client and not self._publishing:
            self._loop.call_soon(self._write, client, sock)

    def _write(self, client: paho.Client, sock: Any) -> None:
        """Write what paho has queued, in one go: at the end of `publish`, else a loop turn after paho
        asked. Only a full socket buffer needs the selector's help (watching for writability on
        each batch costs more)."""
        if not self._writes_to(client, sock):
            return
        client.loop_write()
        if self._writes_to(client, sock) and client.want_write():
            self._loop.add_writer(sock, client.loop_write)
            self._writer = True

    def _writes_to(self, client: paho.Client, sock: Any) -> bool:
        return self._watched is client and client.socket() is sock

    def _handle_unregister_write(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        # paho says so after each write; the loop is asked only when it watches.
        if self._watched is client and self._writer:
            self._loop.remove_writer(sock)
            self._writer = False

    def _handle_socket_close(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        self._unwatch(client, sock)

    def _handle_connect(
        self, client: paho.Client, userdata: Any, flags: Any, reason: ReasonCode, properties: Any
    ) -> None:
        self._got_connack = True
        if reason.is_failure:
            log.warning("MQTT broker %s:%s refused the connection: %s", *self._where(), reason)
            self._refused_version = self._v5 and reason.getName() == "Unsupported protocol version"
            return  # paho closes the socket; `_keep_connected` tries again
        self._was_up = True
        self._window = max(1, min(WINDOW, getattr(properties, "ReceiveMaximum", WINDOW)))  # 0 is not allowed
        for topic in self.settings.subscriptions:
            client.subscribe(topic, qos=1)
        log.info("MQTT connected to %s:%s (MQTT %s)", *self._where(), self.protocol)
        self._loop.call_soon(self._connected, client)

    def _handle_disconnect(
        self, client: paho.Client, userdata: Any, flags: Any, reason: ReasonCode, properties: Any
    ) -> None:
        if not self._stopping:
            log.warning("MQTT connection to %s:%s lost (%s); reconnecting", *self._where(), reason)

    def _handle_publish(
        self, client: paho.Client, userdata: Any, mid: int, reason: ReasonCode, properties: Any
    ) -> None:
        msg = self._inflight.pop(mid, None) if client is self._client else None
        if msg is None:
            return
        if self._careful:
            self._careful -= 1
            self._suspect, self._hang_ups = None, 0
        if reason.is_failure:
            # Done with all the same: sending it again would be refused again.
            self._refused(msg, reason)
        else:
            self.published += 1
        self._done(msg)

    def _done(self, msg: Message) -> None:
        """`msg` needs no more sending: report its receipt, and go on with the queue."""
        if msg.receipt is not None:
            self._receipts.append(msg.receipt)
        if not self._settle_due:
            self._settle_due = True
            self._loop.call_soon(self._settle)

    def _refused(self, msg: Message, reason: ReasonCode) -> None:
        self.refused += 1
        now = self._loop.time()
        if now >= self._refusals_quiet_until:
            self._refusals_quiet_until = now + REFUSAL_WARNING_EVERY
            log.warning(
                "MQTT broker refused the message to %s: %s (%d refused since start; is the bridge allowed "
                "to publish under its base topic?)",
                msg.topic,
                reason,
                self.refused,
            )

    def _handle_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        self._loop.call_soon(self._on_message, Inbound(msg.topic, bytes(msg.payload), bool(msg.retain)))


def broker_answers(host: str, port: int, timeout: float = 0.5) -> bool:
    """True when something accepts TCP connections at host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


@dataclass(frozen=True, slots=True)
class Endpoint:
    host: str
    port: int
    tls: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    protocol: str = "auto"  # as in BrokerSettings

    def __str__(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


def parse_url(url: str) -> Endpoint:
    """mqtt://[user:pass@]host[:port] or mqtts://...; ValueError when it is not one."""
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
        raise ValueError(f"{url!r} is not mqtt://host:port or mqtts://host:port")
    tls = parts.scheme == "mqtts"
    return Endpoint(
        host=parts.hostname,
        port=parts.port or (8883 if tls else 1883),
        tls=tls,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
    )
