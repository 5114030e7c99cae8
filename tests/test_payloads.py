"""The JSON every message carries: compact, in key order, and no bigger in memory than it is."""

import json
import tracemalloc
from datetime import UTC, datetime, timedelta

import pytest

from bridge import payloads
from bridge.calls import CallRecord, CallResult, Direction, Phone
from bridge.config import parse_config
from bridge.outbound import RECORDS_KEPT, Outbound
from bridge.registry import Registry
from bridge.topics import Topics


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


# ---- call records kept encoded (Outbound) -----------------------------------------------------

T0 = datetime(2026, 11, 27, 1, 0, tzinfo=UTC)


def records(count: int, device: str = "001565aabbcc", first: int = 0) -> list[CallRecord]:
    made = []
    for n in range(first, first + count):
        began = T0 + timedelta(seconds=7.123 * n)
        made.append(
            CallRecord(
                f"call-{n}",
                device,
                Direction.INCOMING,
                f"+4930{n}",
                f"Caller {n}",
                "1",
                began,
                began + timedelta(seconds=3),
                began + timedelta(seconds=30),
                3.0,
                27.0,
                CallResult.ANSWERED,
                "phone",
            )
        )
    return made


class Encodings:
    """Counts the records `Outbound` encodes (it calls `payloads.record` for each one it builds)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        build = payloads.record

        def counted(rec: CallRecord) -> payloads.Json:
            self.count += 1
            return build(rec)

        monkeypatch.setattr(payloads, "record", counted)


def test_kept_records_give_the_same_bytes_as_building_them() -> None:
    out, history = Outbound(Topics("amego"), 1), records(20)
    phone = Phone("001565aabbcc", last_call=history[0])
    for _ in range(2):  # built, then kept
        assert out.history("001565aabbcc", history).payload == payloads.encode(payloads.history(history))
        assert out.call("001565aabbcc", phone, T0).payload == payloads.encode(payloads.call_state(phone, T0))
        ended = payloads.call_ended(history[0], "yealink", True, T0, None, out.record)
        assert payloads.encode(ended) == payloads.encode(
            payloads.call_ended(history[0], "yealink", True, T0, None)
        )
    # the standard library's path (int keys) writes a kept record as the same JSON
    assert json.loads(payloads.encode({1: out.record(history[0])})) == {"1": payloads.record(history[0])}


def test_the_histories_of_a_thousand_phones_are_built_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each call's end restates the phone's history. With 4,096 records kept and all dropped when
    full, 1,000 phones with 20 calls each had most of every history built again: 107 µs instead
    of 6.5 for one history, and the bridge's CPU per hit rose by a fifth over 60,000 hits."""
    out, encodings = Outbound(Topics("amego"), 1), Encodings(monkeypatch)
    phones = [records(20, f"phone{p}", first=20 * p)[::-1] for p in range(1000)]  # newest first
    assert RECORDS_KEPT >= 1000 * 20
    for history in phones:
        out.history(history[0].device, history)
    assert encodings.count == 20_000
    for history in phones:  # every phone's next history: one new record each
        new = records(1, history[0].device, first=100_000)
        out.history(history[0].device, [*new, *history[:19]])
    assert encodings.count == 21_000


def test_the_least_recently_used_record_goes_first_and_restating_every_phone_keeps_none(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out, encodings = Outbound(Topics("amego"), 1), Encodings(monkeypatch)
    many = records(RECORDS_KEPT + 1)
    kept = [out.record(rec) for rec in many[:-1]]
    assert out.record(many[0]) is kept[0]  # used again: now the most recent
    out.record(many[-1])  # one more than there is room for
    assert encodings.count == RECORDS_KEPT + 1
    assert out.record(many[0]) is kept[0]
    assert out.record(many[2]) is kept[2]
    assert out.record(many[1]) is not kept[1]  # the least recently used was dropped, built again
    assert encodings.count == RECORDS_KEPT + 2

    fresh = Outbound(Topics("amego"), 1)
    device = Registry(parse_config({}, {})[0]).new("001565aabbcc", "yealink", True, T0)
    device.history.extend(records(10, first=500))
    fresh.restate(device, T0, keep=False)
    fresh.restate(device, T0, keep=False)
    assert encodings.count == RECORDS_KEPT + 2 + 20  # nothing kept: built each time
    fresh.restate(device, T0)
    fresh.restate(device, T0)
    assert encodings.count == RECORDS_KEPT + 2 + 30  # kept the first time


def test_the_call_message_uses_a_kept_last_call_but_keeps_none(monkeypatch: pytest.MonkeyPatch) -> None:
    """A restored phone's last call is built for each `call` message until its next call ends
    (which keeps it): 10,000 restored phones booting would otherwise fill what is kept."""
    out, encodings = Outbound(Topics("amego"), 1), Encodings(monkeypatch)
    last = records(1)[0]
    phone = Phone("001565aabbcc", last_call=last)
    out.call("001565aabbcc", phone, T0)
    out.call("001565aabbcc", phone, T0)
    assert encodings.count == 2
    out.record(last)  # the call's end keeps it
    out.call("001565aabbcc", phone, T0)
    assert encodings.count == 3
