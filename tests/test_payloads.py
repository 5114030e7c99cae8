"""The JSON every message carries: compact, in key order, and no bigger in memory than it is."""

import json
import tracemalloc

from bridge import payloads


def test_encode_is_compact_json_in_key_order() -> None:
    data = {"state": "online", "name": "Jürgen", "n": [1, None, True]}
    assert payloads.encode(data) == '{"state":"online","name":"Jürgen","n":[1,null,true]}'.encode()
    assert json.loads(payloads.encode({1: "int keys: the standard library's path"})) == {
        "1": "int keys: the standard library's path"
    }


def test_an_encoded_payload_takes_about_its_own_size_in_memory() -> None:
    """Messages wait in the MQTT queue while the broker is away (up to mqtt.queue_size). orjson
    alone returns its 4 kB working buffer even for 18 bytes of JSON."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = [payloads.encode({"state": "online"}) for _ in range(1000)]
        per_payload = (tracemalloc.get_traced_memory()[0] - before) / len(kept)
    finally:
        tracemalloc.stop()
    assert kept[0] == b'{"state":"online"}'
    assert per_payload < 200
