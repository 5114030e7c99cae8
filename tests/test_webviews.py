"""What the status page shows, as plain values: no server, no browser."""

from datetime import UTC, datetime

import pytest

from bridge.calls import CallResult
from bridge.feed import Fanout, HitLog, HitSeen
from bridge.profiles import BUILTIN_PROFILES
from bridge.store import CallQuery
from bridge.webviews import QueryError, cell, duration, hit_device, parse_call_query, setup_view

NOW = datetime(2026, 11, 26, 8, 40, 55, tzinfo=UTC)


@pytest.mark.parametrize(
    ("seconds", "shown"), [(0, "0:00"), (7.9, "0:07"), (754, "12:34"), (3723, "1:02:03"), (-3, "0:00")]
)
def test_duration(seconds: float, shown: str) -> None:
    assert duration(seconds) == shown


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (None, ""),
        ("Alice", "Alice"),
        ("+4930123456", "+4930123456"),
        ("-2+3", "'-2+3"),
        ("=HYPERLINK(1)", "'=HYPERLINK(1)"),
        ("+1+2", "'+1+2"),
        ("@SUM(A1)", "'@SUM(A1)"),
        (12.5, "12.5"),
    ],
)
def test_csv_cells_never_start_a_formula(value: object, shown: str) -> None:
    assert cell(value) == shown


@pytest.mark.parametrize(
    ("params", "query"),
    [
        ({}, CallQuery()),
        ({"device": "", "result": "", "since": "", "limit": ""}, CallQuery()),
        ({"device": "00-15-65-AA-BB-CC"}, CallQuery(device="001565aabbcc")),
        ({"device": "ip-192-168-1-50"}, CallQuery(device="ip-192-168-1-50")),
        ({"result": "Missed"}, CallQuery(result=CallResult.MISSED)),
        ({"since": "2026-11-26"}, CallQuery(since=datetime(2026, 11, 26, tzinfo=UTC))),
        ({"since": "2026-11-26T08:40:55Z"}, CallQuery(since=NOW)),
        ({"limit": "5"}, CallQuery(limit=5)),
    ],
)
def test_call_query(params: dict[str, str], query: CallQuery) -> None:
    assert parse_call_query(params) == query


@pytest.mark.parametrize(
    ("params", "key"),
    [
        ({"device": "a/b"}, "device"),
        ({"result": "lost"}, "result"),
        ({"since": "soon"}, "since"),
        ({"limit": "0"}, "limit"),
        ({"limit": "10001"}, "limit"),
        ({"limit": "-1"}, "limit"),
    ],
)
def test_call_query_names_the_bad_filter(params: dict[str, str], key: str) -> None:
    with pytest.raises(QueryError, match=f"^{key}: "):
        parse_call_query(params)


def hit(query: str, device: str | None = None, status: int = 403) -> HitSeen:
    return HitSeen(NOW, "GET", "/incomingcall/yealink", query, "192.0.2.5", status, "no", device)


@pytest.mark.parametrize(
    ("seen", "device"),
    [
        (hit("device=00:15:65:AA:BB:CC&token=***"), "001565aabbcc"),
        (hit("mac=001565aabbcc"), "001565aabbcc"),
        (hit("device=$mac"), None),
        (hit(""), None),
        (hit("device=00:15:65:aa:bb:cc", device="ip-192-0-2-5", status=200), "ip-192-0-2-5"),
    ],
)
def test_the_phone_of_a_hit(seen: HitSeen, device: str | None) -> None:
    assert hit_device(seen) == device


def test_setup_urls_fill_in_the_server_and_escape_the_token() -> None:
    view = setup_view(BUILTIN_PROFILES["snom"], "http://192.0.2.10:8080", "a&b c")
    first = view.urls[0]
    assert first.setting == "action_setup_url"
    assert (
        first.url
        == "http://192.0.2.10:8080/setup_completed/snom?device=$mac&local=$local&ip=$phone_ip&token=a%26b%20c"
    )
    assert view.lines[0] == f"action_setup_url = {first.url}"
    assert view.token is True
    assert any("Setup > Action URL Settings" in step for step in view.steps)


def test_setup_lines_use_the_vendors_separator_and_the_bridge_address() -> None:
    view = setup_view(BUILTIN_PROFILES["aastra"], "http://192.0.2.10:8080", "")
    assert view.lines[0].startswith("action uri startup: http://192.0.2.10:8080/setup_completed/aastra?")
    assert "xml application post list: 192.0.2.10" in view.lines
    assert view.token is False
    assert all("token" not in u.url for u in view.urls)


def test_hit_log_keeps_the_last_n_with_growing_numbers() -> None:
    log = HitLog(size=3)
    for n in range(5):
        log.add(hit(f"n={n}"))
    assert [e.seq for e in log.newest()] == [5, 4, 3]
    assert [e.hit.query for e in log.after(3)] == ["n=3", "n=4"]


def test_a_stream_that_falls_behind_is_closed_not_grown() -> None:
    fanout = Fanout(backlog=2)
    slow, quick = fanout.subscribe(), fanout.subscribe()
    for n in range(3):
        fanout.publish(f"frame {n}")
        while not quick.empty():
            quick.get_nowait()
    assert fanout.queues == {quick}
    assert [slow.get_nowait() for _ in range(slow.qsize())] == ["frame 0", "frame 1", ""]


def test_streams_end_when_the_server_stops_even_one_that_is_just_opening() -> None:
    fanout = Fanout()
    open_stream = fanout.subscribe()
    fanout.close_all()
    assert open_stream.get_nowait() == ""
    late = fanout.subscribe()
    assert late.get_nowait() == ""
    assert not fanout
