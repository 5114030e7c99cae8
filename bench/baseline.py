"""The thinnest relay on the bridge's stack: Starlette + uvicorn + paho, one publish per hit, no state.

What the bridge is measured against: the same HTTP server and MQTT client, with nothing in
between. Each Action URL hit is published as it came, in one QoS 1 message on `<base>/event`.

    python bench/baseline.py --port 8081 --broker 127.0.0.1:1883 --base-topic relay

With `--mix bridge` it also publishes, beside each hit's event, what the bridge publishes for a
hit on average: the same number of messages, of the same sizes, retained where the bridge's are.
"""

import argparse
import json
import os
from collections.abc import Callable
from urllib.parse import parse_qsl

import paho.mqtt.client as paho
import uvicorn
from paho.mqtt.enums import CallbackAPIVersion
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

# What the bridge publishes for a hit besides its event, flat out with the bench's 50 phones
# (2026-11-27, bench/README.md, "Ninth profile"): (topic, retained, in how many hits of every
# 100, mean payload bytes). `call_ended` events go to the event topic, as the contract has it.
BRIDGE_MIX = (
    ("event", False, 22, 762),
    ("call", True, 83, 626),
    ("status", True, 34, 198),
    ("history", True, 22, 6441),
)
BRIDGE_EVENT_BYTES = 395  # a hit's own event, on average
MIX_MESSAGES = 1 + sum(every for _, _, every, _ in BRIDGE_MIX) / 100  # a hit, on average


def padded(obj: str, size: int) -> str:
    """The JSON object `obj` (ASCII) with a "pad" member that makes it `size` bytes, or at least
    as long as it was."""
    head = obj[:-1] + ("," if obj != "{}" else "") + '"pad":"'
    return head + "x" * max(0, size - len(head) - 2) + '"}'


def mix_publisher(client: paho.Client, base_topic: str) -> Callable[[str], None]:
    """Publishes the bridge's mix for one hit of the phone `device` (its MAC), each kind spread evenly
    over the hits (`every` of 100 hits, at steady intervals)."""
    payloads = {size: padded("{}", size).encode() for _, _, _, size in BRIDGE_MIX}
    hits = 0

    def publish(device: str) -> None:
        nonlocal hits
        phone = "".join(c for c in device.lower() if c.isalnum())[:32] or "unknown"  # one topic level
        for name, retained, every, size in BRIDGE_MIX:
            if (hits + 1) * every // 100 != hits * every // 100:
                topic = f"{base_topic}/event" if name == "event" else f"{base_topic}/{phone}/{name}"
                client.publish(topic, payloads[size], qos=1, retain=retained)
        hits += 1

    return publish


def build_app(client: paho.Client, base_topic: str, mix: bool = False) -> Starlette:
    topic = f"{base_topic}/event"
    publish_mix = mix_publisher(client, base_topic) if mix else None

    async def action(request: Request) -> Response:
        query = request.scope["query_string"].decode("utf-8", "replace")
        payload = {
            "event": request.path_params["event"],
            "phone_type": request.path_params["phone_type"],
            "params": dict(parse_qsl(query, keep_blank_values=True)),
        }
        body = json.dumps(payload, separators=(",", ":"))
        if publish_mix is not None:
            body = padded(body, BRIDGE_EVENT_BYTES)
        client.publish(topic, body, qos=1)
        if publish_mix is not None:
            publish_mix(payload["params"].get("device", ""))
        return PlainTextResponse("OK")

    async def healthz(request: Request) -> Response:
        return JSONResponse({"mqtt_connected": client.is_connected()})

    return Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET"]),
            Route("/{event}/{phone_type}", action, methods=["GET", "POST"]),
        ]
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--broker", required=True, metavar="HOST:PORT")
    p.add_argument("--base-topic", default="relay")
    p.add_argument("--mix", choices=["bridge"], help="also publish the bridge's messages for a hit")
    args = p.parse_args()
    host, port = args.broker.rsplit(":", 1)
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"relay-{os.getpid()}")
    client.max_inflight_messages_set(200)  # the bridge's window
    client.max_queued_messages_set(0)
    client.connect(host, int(port))
    client.loop_start()
    uvicorn.run(
        build_app(client, args.base_topic, mix=args.mix == "bridge"),
        host="127.0.0.1",
        port=args.port,
        access_log=False,
        log_config=None,
        server_header=False,
        loop="auto",
        http="auto",
    )
    client.disconnect()
    client.loop_stop()


if __name__ == "__main__":
    main()
