"""The one paho adapter: connection, last will, an ordered bounded publish queue, subscriptions.

Nothing outside this module touches paho. Callbacks arrive on paho's network thread; they are
handed to the asyncio loop with `call_soon_threadsafe`.

Delivery: messages wait in our own bounded queue and are handed to paho a window at a time,
only while connected. paho keeps QoS 1 messages it was given until they are acknowledged and
would resend them *after* anything published during the reconnect, breaking order; so on
every disconnect we take back what is unacknowledged (`drop_out_messages`) and put it at the
front of our queue. Order is kept, and a message is at worst sent twice (at-least-once).
"""

import asyncio
import logging
import socket
import ssl
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.reasoncodes import ReasonCode

log = logging.getLogger(__name__)

# Messages handed to paho and not yet acknowledged, at most.
WINDOW = 200
# Seconds an MQTT 5 CONNECT may go unanswered before we retry with 3.1.1: some 3.1.1-only
# brokers (amqtt, given a last will) neither answer nor hang up.
CONNACK_WAIT = 5.0


@dataclass(frozen=True, slots=True)
class Message:
    topic: str
    payload: bytes
    retain: bool = False
    qos: int = 1
    receipt: str | None = None  # reported to `on_delivered` once the broker has the message


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


class MqttLink:
    """Owned by the asyncio loop's thread: the queue is touched only there, so no locks.

    paho's callbacks (on its network thread) only post to the loop; paho may call them while
    holding its own locks, and waiting there for ours would deadlock.
    """

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
        self._ready = False
        self._got_connack = False
        self._attempt = 0  # connections opened, to tell a stale CONNACK timer from a live one
        self._v5 = settings.protocol != "3.1.1"
        self._stopping = False
        self._empty = asyncio.Event()
        self.on_delivered: Callable[[str], None] | None = None
        self.published = 0
        self._client = self._make_client()

    # ---- public (loop thread) -----------------------------------------------------------------

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
        self._drain()
        return True

    def start(self) -> None:
        s = self.settings
        self._client.connect_async(s.host, s.port, keepalive=s.keepalive)
        self._client.loop_start()

    async def flush(self) -> None:
        """Wait until everything queued is acknowledged (bound it with asyncio.timeout)."""
        if self.queue_length:
            self._empty.clear()
            await self._empty.wait()

    def take_pending(self) -> list[Message]:
        """Everything not yet acknowledged, in order, removed from the queue (to persist it)."""
        messages = [*self._inflight.values(), *self._pending]
        self._inflight.clear()
        self._pending.clear()
        return messages

    def stop(self) -> None:
        self._stopping = True
        self._client.disconnect()
        self._client.loop_stop()

    # ---- loop thread ----------------------------------------------------------------------------

    def _connected(self, client: paho.Client) -> None:
        if client is not self._client:
            return
        self._ready = True
        self._drain()
        self._on_connected()

    def _disconnected(self, client: paho.Client) -> None:
        if client is not self._client:
            return
        self._ready = False
        # Catch what was published between paho's disconnect and now (it answered NO_CONN).
        client.drop_out_messages()
        self._pending.extendleft(reversed(self._inflight.values()))
        self._inflight.clear()

    def _acked(self, client: paho.Client, mid: int) -> None:
        msg = self._inflight.pop(mid, None) if client is self._client else None
        if msg is not None:
            self.published += 1
            if msg.receipt is not None and self.on_delivered is not None:
                self.on_delivered(msg.receipt)
            self._drain()
            if not self.queue_length:
                self._empty.set()

    def _drain(self) -> None:
        while self._ready and self._pending and len(self._inflight) < WINDOW:
            msg = self._pending[0]
            info = self._client.publish(msg.topic, msg.payload, qos=msg.qos, retain=msg.retain)
            if info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
                self._pending.popleft()
                self._inflight[info.mid] = msg
            elif info.rc == MQTTErrorCode.MQTT_ERR_NO_CONN:
                # paho kept it; the disconnect (already posted) hands it back to the queue.
                self._pending.popleft()
                self._inflight[info.mid] = msg
                self._ready = False
            else:
                log.error("MQTT publish to %s refused by the client: %s", msg.topic, info.rc)
                return

    def _fall_back(self) -> None:
        if not self._v5 or self._stopping:
            return
        log.warning("MQTT broker %s:%s does not speak MQTT 5; using 3.1.1", *self._where())
        self._v5 = False
        old = self._client
        old.loop_stop()
        old.disconnect()
        self._pending.extendleft(reversed(self._inflight.values()))
        self._inflight.clear()
        self._client = self._make_client()
        self.start()

    def _expect_connack(self, client: paho.Client, attempt: int) -> None:
        self._loop.call_later(CONNACK_WAIT, self._connack_overdue, client, attempt)

    def _connack_overdue(self, client: paho.Client, attempt: int) -> None:
        if client is self._client and attempt == self._attempt and not self._got_connack:
            self._fall_back()

    def _where(self) -> tuple[str, int]:
        return self.settings.host, self.settings.port

    # ---- paho's thread --------------------------------------------------------------------------

    def _make_client(self) -> paho.Client:
        s = self.settings
        protocol = MQTTProtocolVersion.MQTTv5 if self._v5 else MQTTProtocolVersion.MQTTv311
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=s.client_id,
            protocol=protocol,
            clean_session=None if self._v5 else True,
        )
        client.max_inflight_messages_set(WINDOW)
        client.max_queued_messages_set(0)
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        client.will_set(s.will.topic, s.will.payload, qos=s.will.qos, retain=s.will.retain)
        if s.username:
            client.username_pw_set(s.username, s.password)
        if s.tls:
            client.tls_set_context(ssl.create_default_context())
        client.on_connect = self._handle_connect
        client.on_disconnect = self._handle_disconnect
        client.on_publish = self._handle_publish
        client.on_message = self._handle_message
        client.on_pre_connect = self._handle_pre_connect
        if self._v5:
            client.on_socket_open = self._handle_socket_open
        return client

    def _post(self, callback: Callable[..., None], *args: object) -> None:
        if not self._loop.is_closed():
            self._loop.call_soon_threadsafe(callback, *args)

    def _handle_pre_connect(self, client: paho.Client, userdata: Any) -> None:
        self._got_connack = False

    def _handle_socket_open(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        self._attempt += 1
        self._post(self._expect_connack, client, self._attempt)

    def _handle_connect(
        self, client: paho.Client, userdata: Any, flags: Any, reason: ReasonCode, properties: Any
    ) -> None:
        self._got_connack = True
        if reason.is_failure:
            log.warning("MQTT broker %s:%s refused the connection: %s", *self._where(), reason)
            if self._v5 and reason.getName() == "Unsupported protocol version":
                self._post(self._fall_back)
            return
        for topic in self.settings.subscriptions:
            client.subscribe(topic, qos=1)
        log.info("MQTT connected to %s:%s (MQTT %s)", *self._where(), self.protocol)
        self._post(self._connected, client)

    def _handle_disconnect(
        self, client: paho.Client, userdata: Any, flags: Any, reason: ReasonCode, properties: Any
    ) -> None:
        # Before paho reconnects and resends: take back what it holds unacknowledged, so that
        # it goes out again from our queue, ahead of everything queued after it.
        client.drop_out_messages()
        self._post(self._disconnected, client)
        if not self._stopping:
            log.warning("MQTT connection to %s:%s lost (%s); reconnecting", *self._where(), reason)
        if self._v5 and not self._got_connack and not self._stopping:
            # The broker hung up on an MQTT 5 CONNECT without answering: try 3.1.1.
            self._post(self._fall_back)

    def _handle_publish(
        self, client: paho.Client, userdata: Any, mid: int, reason: ReasonCode, properties: Any
    ) -> None:
        self._post(self._acked, client, mid)

    def _handle_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        self._post(self._on_message, Inbound(msg.topic, bytes(msg.payload), bool(msg.retain)))


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
