"""Whole calls over HTTP, as a Yealink sends them, checked on MQTT: call, history and call_ended."""

from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import Embedded, Mosquitto, RunningBridge, Watcher, make_config, start_bridge

MAC = "001565aabbcc"
A = "remote=sip:5551111@pbx&displayremote=Alice&callid=a1@pbx"
B = "remote=sip:5552222@pbx&displayremote=Bob&callid=b2@pbx"
OUT = "remote=sip:5553333@pbx"

# (steps, expected results newest first, (direction, number) of the newest record)
SCENARIOS = {
    "incoming answered": (
        [("incomingcall", A), ("offhook", ""), ("callestablished", A), ("callterminated", A), ("onhook", "")],
        ["answered"],
        ("incoming", "5551111"),
    ),
    "incoming missed": (
        [("incomingcall", A), ("callterminated", A)],
        ["missed"],
        ("incoming", "5551111"),
    ),
    "outgoing answered": (
        [
            ("offhook", ""),
            ("outgoingcall", OUT),
            ("callestablished", ""),
            ("callterminated", ""),
            ("onhook", ""),
        ],
        ["answered"],
        ("outgoing", "5553333"),
    ),
    "outgoing cancelled": (
        [("offhook", ""), ("outgoingcall", OUT), ("callterminated", ""), ("onhook", "")],
        ["cancelled"],
        ("outgoing", "5553333"),
    ),
    "call waiting with two call ids": (
        [
            ("incomingcall", A),
            ("callestablished", A),
            ("incomingcall", B),
            ("callterminated", B),
            ("callterminated", A),
        ],
        ["answered", "missed"],
        ("incoming", "5551111"),
    ),
    "lost call_terminated, then on_hook": (
        [("incomingcall", A), ("offhook", ""), ("callestablished", A), ("onhook", "")],
        ["answered"],
        ("incoming", "5551111"),
    ),
}


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_call_scenario(running: RunningBridge, watcher: Watcher, name: str) -> None:
    steps, results, (direction, number) = SCENARIOS[name]
    for event, query in steps:
        response = running.hit(f"/{event}/yealink?device={MAC}&local=sip:100@pbx&{query}")
        assert response.status_code == 200
    base = running.base
    history = watcher.wait_for(f"{base}/{MAC}/history", lambda p: len(p) == len(results))
    assert [r["result"] for r in history] == results
    assert (history[0]["direction"], history[0]["number"]) == (direction, number)
    ended = [m.json() for m in watcher.on(f"{base}/{MAC}/event") if m.json()["event_type"] == "call_ended"]
    assert [e["call"]["result"] for e in ended] == list(reversed(results))
    call = watcher.last(f"{base}/{MAC}/call")
    assert call["calls"] == []
    assert call["last_call"] == history[0]
    assert call["state"] in ("idle", "offhook")


def test_call_waiting_shows_both_calls(running: RunningBridge, watcher: Watcher) -> None:
    for event, query in [("incomingcall", A), ("callestablished", A), ("incomingcall", B)]:
        assert running.hit(f"/{event}/yealink?device={MAC}&{query}").status_code == 200
    call = watcher.wait_for(f"{running.base}/{MAC}/call", lambda p: len(p["calls"]) == 2)
    assert [(c["call_id"], c["state"]) for c in call["calls"]] == [
        ("a1@pbx", "talking"),
        ("b2@pbx", "ringing"),
    ]
    assert (call["state"], call["number"], call["name"]) == ("ringing", "5552222", "Bob")


def test_off_hook_only(running: RunningBridge, watcher: Watcher) -> None:
    assert running.hit(f"/offhook/yealink?device={MAC}").status_code == 200
    watcher.wait_for(f"{running.base}/{MAC}/call", lambda p: p["state"] == "offhook")
    assert running.hit(f"/onhook/yealink?device={MAC}").status_code == 200
    call = watcher.wait_for(f"{running.base}/{MAC}/call", lambda p: p["state"] == "idle")
    assert call["last_call"] is None
    assert watcher.on(f"{running.base}/{MAC}/history") == []


def test_event_borrows_number_and_call_id_from_its_call(running: RunningBridge, watcher: Watcher) -> None:
    assert running.hit(f"/incomingcall/yealink?device={MAC}&{A}").status_code == 200
    assert running.hit(f"/callestablished/yealink?&device={MAC}&local=100").status_code == 200
    event = watcher.wait_for(f"{running.base}/{MAC}/event", lambda p: p["event_type"] == "call_established")
    assert (event["number"], event["name"], event["call_id"]) == ("5551111", "Alice", "a1@pbx")


def newest_is(call_id: str) -> Callable[[Any], bool]:
    return lambda history: bool(history) and history[0]["call_id"] == call_id


def test_a_record_that_leaves_the_history_is_no_longer_kept(
    broker: Mosquitto | Embedded, base_topic: str, watcher: Watcher
) -> None:
    """The bridge keeps call records encoded for its history messages; one that has left its
    phone's history (calls.history_size) is let go, and the history on MQTT stays right."""
    config = make_config(base_topic, broker.url, {"calls": {"history_size": 2}})
    running = start_bridge(config, broker.endpoint)
    try:
        for n in range(1, 4):
            call_id = f"c{n}@pbx"
            for event in ("incomingcall", "callterminated"):
                query = f"device={MAC}&remote=sip:555000{n}@pbx&callid={call_id}"
                assert running.hit(f"/{event}/yealink?{query}").status_code == 200
            history = watcher.wait_for(f"{base_topic}/{MAC}/history", newest_is(call_id))
        assert [r["call_id"] for r in history] == ["c3@pbx", "c2@pbx"]
        device = running.bridge.registry.devices[MAC]
        kept = [rec for rec, _ in running.bridge.out._records.values()]
        assert [r.call_id for r in device.history] == ["c3@pbx", "c2@pbx"]
        assert sorted(r.call_id or "" for r in kept) == ["c2@pbx", "c3@pbx"]
    finally:
        running.stop()
