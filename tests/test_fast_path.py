"""The Action URL fast path answers and reports a hit exactly as the Starlette route would."""

import pytest
from starlette.datastructures import URL

from bridge.app import as_url_path
from tests.conftest import RunningBridge, Watcher

MAC = "001565aabbcc"


@pytest.mark.parametrize(
    "path",
    ["/offhook/yealink", "/off\nhook\r\nforged/yealink", "/a?b/c#d", "/a\\b/\tc", "/ü/snom", "/a%2Fb/c"],
)
def test_the_path_shown_is_starlettes(path: str) -> None:
    """Logs, refusal events and the raw hit show the path as `request.url.path` did: no line breaks."""
    scope = {
        "type": "http",
        "path": path,
        "query_string": b"x=1",
        "headers": [(b"host", b"127.0.0.1:8080")],
        "scheme": "http",
        "server": ("127.0.0.1", 8080),
    }
    assert as_url_path(path) == URL(scope=scope).path


def test_get_and_post_of_a_hit_publish_the_same_event(running: RunningBridge, watcher: Watcher) -> None:
    base = running.base
    got = running.hit(f"/offhook/yealink?device={MAC}&x=1")
    assert (got.status_code, got.text, got.headers["content-type"]) == (
        200,
        "OK",
        "text/plain; charset=utf-8",
    )
    first = watcher.wait_for(f"{base}/{MAC}/event", lambda p: p["event_type"] == "off_hook")
    posted = running.hit(f"/onhook/yealink?device={MAC}&x=1", method="POST")
    assert (posted.status_code, posted.text, posted.headers["content-type"]) == (
        200,
        "OK",
        "text/plain; charset=utf-8",
    )
    second = watcher.wait_for(f"{base}/{MAC}/event", lambda p: p["event_type"] == "on_hook")
    assert first["raw"] == {"method": "GET", "path": "/offhook/yealink", "query": f"device={MAC}&x=1"}
    assert second["raw"] == {"method": "POST", "path": "/onhook/yealink", "query": f"device={MAC}&x=1"}
    assert first["extra"] == second["extra"] == {"x": "1"}


def test_ui_routes_are_not_taken_for_hits(running: RunningBridge) -> None:
    """`/api/<name>` and `/setup/<type>` have the Action URL's shape; they stay the UI's."""
    assert running.hit("/setup/yealink").status_code == 200
    assert running.hit("/api/nothing").status_code == 404
    assert running.hit("/healthz").json()["status"] == "ok"
