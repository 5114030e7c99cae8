"""The thinnest relay on the bridge's stack: Starlette + uvicorn + paho, one publish per hit, no state.

What the bridge is measured against: the same HTTP server and MQTT client, with nothing in
between. Each Action URL hit is published as it came, in one QoS 1 message on `<base>/event`.

    python bench/baseline.py --port 8081 --broker 127.0.0.1:1883 --base-topic relay
"""

import argparse
import json
import os
from urllib.parse import parse_qsl

import paho.mqtt.client as paho
import uvicorn
from paho.mqtt.enums import CallbackAPIVersion
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route


def build_app(client: paho.Client, base_topic: str, messages: int = 1) -> Starlette:
    topic = f"{base_topic}/event"
    extra = [f"{base_topic}/state/{n}" for n in range(1, messages)]  # retained, as state would be

    async def action(request: Request) -> Response:
        query = request.scope["query_string"].decode("utf-8", "replace")
        payload = {
            "event": request.path_params["event"],
            "phone_type": request.path_params["phone_type"],
            "params": dict(parse_qsl(query, keep_blank_values=True)),
        }
        body = json.dumps(payload, separators=(",", ":"))
        client.publish(topic, body, qos=1)
        for state in extra:
            client.publish(state, body, qos=1, retain=True)
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
    p.add_argument("--messages", type=int, default=1, help="MQTT messages per hit (the bench uses 1)")
    args = p.parse_args()
    host, port = args.broker.rsplit(":", 1)
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"relay-{os.getpid()}")
    client.max_inflight_messages_set(200)  # the bridge's window
    client.max_queued_messages_set(0)
    client.connect(host, int(port))
    client.loop_start()
    uvicorn.run(
        build_app(client, args.base_topic, args.messages),
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
