"""The garbage collector walks only what is new; what lives on is frozen, and still freed."""

import gc
import warnings
import weakref
from collections.abc import Iterator

import pytest

from bridge.calls import Phone
from bridge.collector import Collector
from tests.conftest import Mosquitto, RunningBridge, make_config, start_bridge, unique_base, wait_until
from tests.phone_standin import StandIn

MAC = "001565aabbcc"


class Thing:
    """Tracked by the collector, and weakly referable."""

    me: "Thing | None" = None


def walked(obj: object) -> bool:
    """Whether the collector's generations hold `obj` (a frozen object is in none of them)."""
    return any(found is obj for found in gc.get_objects())


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def collector() -> Iterator[tuple[Collector, Clock]]:
    # These tests run full collections in the test process: what earlier tests left to the
    # collector (an unclosed socket, say) is collected first, and its warnings are theirs.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()
    clock = Clock()
    collector = Collector(check_every=3600, clock=clock)
    try:
        yield collector, clock
    finally:
        collector.stop()


def test_what_is_alive_at_a_tick_is_left_out_of_collections_and_freed_when_dropped(
    collector: tuple[Collector, Clock],
) -> None:
    keeper, _ = collector
    phone = Phone(device="0004f2a0b1c2")
    thing = Thing()
    gone = weakref.ref(thing)
    assert walked(phone)
    assert walked(thing)
    keeper.tick()
    assert not walked(phone)
    assert not walked(thing)
    del thing  # reference counting frees a frozen object the moment its last reference goes
    assert gone() is None


def test_a_cycle_that_died_before_a_tick_is_collected_by_it_not_frozen(
    collector: tuple[Collector, Clock],
) -> None:
    keeper, _ = collector
    gc.disable()  # no collection of the process's own in between: only the tick's
    try:
        oldest = Thing()
        oldest.me = oldest
        gc.collect(1)  # `oldest` moves on to the oldest generation
        older = Thing()
        older.me = older
        gc.collect(0)  # `older` to the middle one; `young` is made after
        young = Thing()
        young.me = young
        gone = weakref.ref(young), weakref.ref(older), weakref.ref(oldest)
        del young, older, oldest
        keeper.tick()
    finally:
        gc.enable()
    assert [ref() for ref in gone] == [None, None, None]


def test_a_cycle_frozen_while_alive_is_collected_once_what_is_frozen_grew_by_a_quarter(
    collector: tuple[Collector, Clock],
) -> None:
    keeper, clock = collector
    keeper.settle()
    cycle = Thing()
    cycle.me = cycle
    gone = weakref.ref(cycle)
    keeper.tick()
    del cycle
    gc.collect()
    assert gone() is not None  # frozen: what the freeze costs, until...
    clock.now += 3600
    keeper.tick()  # a check later, what is frozen has not grown by a quarter: nothing is walked
    assert gone() is not None
    grown = [Thing() for _ in range(gc.get_freeze_count() // 3)]
    keeper.tick()
    assert gone() is not None  # counted once a check only
    clock.now += 3600
    keeper.tick()  # ...a third more: everything is collected
    assert gone() is None
    assert not walked(grown[-1])  # and what is alive is frozen again


def test_a_stopped_collector_leaves_nothing_frozen(collector: tuple[Collector, Clock]) -> None:
    keeper, _ = collector
    keeper.tick()
    assert gc.get_freeze_count() > 0
    keeper.stop()
    assert gc.get_freeze_count() == 0


def test_a_running_bridge_freezes_what_a_hit_leaves_within_seconds_and_unfreezes_when_stopped(
    mosquitto: Mosquitto,
) -> None:
    rb: RunningBridge = start_bridge(make_config(unique_base(), mosquitto.url), mosquitto.endpoint)
    try:
        assert rb.hit(f"/incoming/yealink?device={MAC}&remote=5551234").status_code == 200
        phone = rb.bridge.devices[MAC].phone
        assert phone.calls  # the ringing call: the phone's state until its next hit
        wait_until(lambda: not walked(phone), timeout=5, what="the phone's state to be frozen")
    finally:
        rb.stop()
    assert gc.get_freeze_count() == 0


def test_polls_of_a_phone_that_answers_leave_their_garbage_to_the_collector(mosquitto: Mosquitto) -> None:
    """Each request to a phone leaves its connection's objects in reference cycles (httpx's): a
    tick collects them before it freezes, so a bridge polling answering phones does not grow."""
    phone = StandIn(auth="basic", password="pw")
    device = {"phone_type": "yealink", "ip": phone.address, "username": "admin", "password": "pw"}
    config = make_config(unique_base(), mosquitto.url, {"poll": {"interval": 0.05}, "devices": {MAC: device}})
    gc.collect()
    gc.disable()  # the bridge's ticks collect; the test process's own collections would hide a leak
    try:
        rb = start_bridge(config, mosquitto.endpoint)
        try:
            wait_until(lambda: len(phone.accepted()) >= 60, what="60 polls")
        finally:
            rb.stop()
        polls = len(phone.accepted())
        left = gc.collect()  # the bridge has stopped, and unfrozen what it froze
    finally:
        gc.enable()
        phone.close()
    # Kept before: 4,499 objects for 62 polls. Now 177: the polls under way at a tick, and the stop.
    assert left < polls * 15
