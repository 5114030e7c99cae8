"""The MQTT side alone: CPU per QoS 1 message, the bridge's link against plain paho.

    python bench/mqtt_bench.py [--messages 40000] [--rounds 3]

Both publish the same messages (two per "hit", as the bridge does for a call change, at most
100 unacknowledged) to one private mosquitto on a free port, and wait for every PUBACK:
- **paho**: a plain `paho.Client` driven by `loop()` in the same thread, with paho's own in-flight
  limit at the window, as one would write it;
- **link**: the bridge's `MqttLink` on an asyncio loop (its PUBACK fast path, its queue).
Each round runs both, alternating which goes first; the best round of each counts. Prints CPU
µs per message (process time: user + system) and the ratio link/paho, for MQTT 5 and 3.1.1.
"""

import argparse
import asyncio
import contextlib
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from bench.run import mosquitto
from bridge.mqtt import BrokerSettings, Message, MqttLink

IN_FLIGHT = 100
PAYLOAD = b'{"state":"talking","number":"5551234","name":"Alice","line":"100","since":"2026-11-26T12:00:00Z"}'


@contextlib.contextmanager
def broker() -> Iterator[int]:
    """The full bench's private mosquitto (set_tcp_nodelay on), in a directory of its own."""
    with tempfile.TemporaryDirectory(prefix="amego-mqtt-bench-") as workdir, mosquitto(Path(workdir)) as it:
        yield it.port


def messages(count: int) -> list[Message]:
    return [Message(f"bench/{n % 50:012x}/call", PAYLOAD, retain=True) for n in range(count)]


def plain_paho(port: int, batch: list[Message], v5: bool) -> float:
    """CPU seconds to publish `batch` with paho alone and have every PUBACK back."""
    protocol = MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311
    client = paho.Client(CallbackAPIVersion.VERSION2, protocol=protocol)
    client.max_inflight_messages_set(IN_FLIGHT)
    client.max_queued_messages_set(0)
    acked = 0

    def on_publish(*args: object) -> None:
        nonlocal acked
        acked += 1

    client.on_publish = on_publish
    client.connect("127.0.0.1", port)
    while not client.is_connected():
        client.loop(0.1)
    started = time.process_time()
    sent = 0
    while acked < len(batch):
        while sent < len(batch) and sent - acked < IN_FLIGHT:
            for msg in batch[sent : sent + 2]:
                client.publish(msg.topic, msg.payload, qos=1, retain=msg.retain)
            sent += 2
        client.loop(1.0)
    spent = time.process_time() - started
    client.disconnect()
    return spent


def link(port: int, batch: list[Message], v5: bool) -> float:
    """CPU seconds to publish `batch` through the bridge's MqttLink and have every PUBACK back."""

    async def run() -> float:
        loop = asyncio.get_running_loop()
        up = asyncio.Event()
        will = Message("bench/bridge/state", b"offline", retain=True)
        name, protocol = f"bench-{time.monotonic_ns()}", "auto" if v5 else "3.1.1"
        settings = BrokerSettings("127.0.0.1", port, name, will, len(batch), protocol=protocol)
        mqtt = MqttLink(settings, loop, up.set, lambda m: None)
        mqtt.start()
        await up.wait()
        started = time.process_time()
        sent = 0
        while sent < len(batch):
            if mqtt.queue_length < IN_FLIGHT:
                mqtt.publish(batch[sent : sent + 2])
                sent += 2
            else:
                await asyncio.sleep(0)
        await mqtt.flush()
        spent = time.process_time() - started
        mqtt.stop()
        return spent

    return asyncio.run(run())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=40_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    batch = messages(args.messages - args.messages % 2)
    print(f"{'':24} {'paho':>10} {'link':>10} {'link/paho':>10}")
    with broker() as port:
        for v5, label in ((True, "MQTT 5"), (False, "MQTT 3.1.1")):
            best = {"paho": float("inf"), "link": float("inf")}
            for turn in range(args.rounds):
                order = (("paho", plain_paho), ("link", link))
                for name, run in order if turn % 2 == 0 else reversed(order):
                    best[name] = min(best[name], run(port, batch, v5))
            paho_us, link_us = (best[n] / len(batch) * 1e6 for n in ("paho", "link"))
            ratio = link_us / paho_us
            print(f"{label + ', µs per message':24} {paho_us:>10.1f} {link_us:>10.1f} {ratio:>10.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
