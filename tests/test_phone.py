"""Where the bridge sends a phone's requests: its configured address, else one its hits gave."""

import asyncio
import importlib.abc
import json
import ssl
import subprocess
import sys
from collections.abc import Callable
from ipaddress import ip_network
from pathlib import Path
from typing import Any

import httpx
import pytest

from bridge.commands import render
from bridge.config import DEFAULT_NETWORKS, ConfigError, parse_config
from bridge.phone import CLIENTS, Outcome, Target, phone_address, send
from bridge.phone_commands import REACHABILITY, YEALINK_COMMANDS
from tests.phone_standin import StandIn


@pytest.mark.parametrize(
    ("configured", "learned", "address"),
    [
        ("192.168.1.50", "10.0.0.9", "192.168.1.50"),
        ("192.168.1.50:8443", None, "192.168.1.50:8443"),
        ("phone.lan:8080", None, "phone.lan:8080"),
        ("fe80::1", None, "[fe80::1]"),
        ("[fd00::5]:8080", None, "[fd00::5]:8080"),
        ("", "192.168.1.50", "192.168.1.50"),
        ("", "fd00::5", "[fd00::5]"),
        ("", "8.8.8.8", None),  # outside http.allowed_networks: a hit cannot redirect the login
        ("", "192.168.1.50/x", None),
        ("", "evil.example", None),
        ("", "10.0.0.1@evil.example", None),
        ("", None, None),
    ],
)
def test_phone_address(configured: str, learned: str | None, address: str | None) -> None:
    assert phone_address(configured, learned, DEFAULT_NETWORKS) == address


def test_learned_addresses_follow_allowed_networks() -> None:
    assert phone_address("", "8.8.8.8", (ip_network("8.8.8.0/24"),)) == "8.8.8.8"
    assert phone_address("", "192.168.1.50", ()) is None


@pytest.mark.parametrize(
    ("data", "key", "problem"),
    [
        ({"devices": {"lobby": {"auth": "ntlm"}}}, "devices.lobby.auth", "must be auto, basic or digest"),
        ({"devices": {"lobby": {"tls": "yes"}}}, "devices.lobby.tls", "expected boolean"),
        ({"control": {"timeout": 0}}, "control.timeout", "greater than 0"),
        ({"control": {"queue_size": 0}}, "control.queue_size", "between 1 and 1000"),
    ],
)
def test_control_settings_are_checked(data: dict[str, object], key: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(data, {})
    assert caught.value.key == key
    assert problem in str(caught.value)


def test_the_default_login_is_a_secret() -> None:
    config, _ = parse_config({"control": {"username": "admin", "password": "s3cret-default"}}, {})
    assert "s3cret-default" not in repr(config)
    assert config.public_dict()["control"] == {
        "timeout": 5.0,
        "queue_size": 16,
        "username": "admin",
        "password": "***",
        "password_file": "",
    }


def test_a_request_to_a_phone_looks_for_no_module(
    phones: Callable[..., StandIn], monkeypatch: pytest.MonkeyPatch
) -> None:
    """httpcore imports sniffio on every connection. Without it installed, each request (a poll of
    each phone every minute, by default) searched the path for it and failed: 1.6 instead of 1.3 ms
    of CPU for a poll answered, 0.58 instead of 0.34 ms for one refused."""
    standin = phones()
    target = Target(standin.address, timeout=2.0)
    searched: list[str] = []

    class Watch(importlib.abc.MetaPathFinder):
        def find_spec(self, name: str, *args: object) -> None:
            searched.append(name)

    async def twice() -> list[Outcome]:
        return [await send(target, render(REACHABILITY, {}), YEALINK_COMMANDS) for _ in range(2)]

    asyncio.run(twice())  # whatever the first one imports for good
    monkeypatch.setattr(sys, "meta_path", [Watch(), *sys.meta_path])
    outcomes = asyncio.run(twice())
    assert [o.http_status for o in outcomes] == [200, 200]
    assert searched == []


FIRST_REQUEST = """
import asyncio, importlib.abc, json, ssl, sys
import bridge.app  # what `amego-bridge run` has imported before its first hit
from bridge import phone
from bridge.commands import render
from bridge.phone_commands import REACHABILITY, YEALINK_COMMANDS
from bridge.config import parse_config
from bridge.service import Bridge
if sys.argv[2] == "prepared":
    phone.prepare()
elif sys.argv[2] == "started":  # the app's start-up, without MQTT
    config, _ = parse_config({"storage": {"dir": sys.argv[3]}, "arp": {"enabled": False}}, {})
    app = bridge.app.build_app(Bridge(config), None)
    async def start_and_stop():
        async with app.router.lifespan_context(app):
            pass
    asyncio.run(start_and_stop())
searched, contexts = [], []
class Watch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, *args):
        searched.append(name)
sys.meta_path.insert(0, Watch())
made = ssl.create_default_context
ssl.create_default_context = lambda *a, **k: contexts.append(1) or made(*a, **k)
target = phone.Target(sys.argv[1], timeout=5.0)
outcome = asyncio.run(phone.send(target, render(REACHABILITY, {}), YEALINK_COMMANDS))
print(json.dumps({"status": outcome.http_status, "imported": searched, "tls_contexts": len(contexts)}))
"""


def first_request(address: str, before: str, storage: Path) -> dict[str, object]:
    """A phone request in a fresh interpreter that has imported the bridge's app, and `before` it
    has done nothing else ("as is"), called `prepare()`, or "started" and stopped the app: what the
    request imported and how many TLS contexts (CA certificates loaded) it built on the way."""
    done = subprocess.run(
        [sys.executable, "-c", FIRST_REQUEST, address, before, str(storage)],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    found: dict[str, object] = json.loads(done.stdout)
    return found


def test_the_first_request_to_a_phone_loads_nothing_once_started(
    phones: Callable[..., StandIn], tmp_path: Path
) -> None:
    """The bridge's first poll (a minute after start) or command used to load the CA certificates
    and httpx's connection modules on the event loop: 50-80 ms during which no hit was taken.
    The app's start-up calls `prepare()`, before uvicorn listens."""
    standin = phones()
    unprepared = first_request(standin.address, "as is", tmp_path / "a")
    assert unprepared["status"] == 200
    assert unprepared["imported"], "a fresh interpreter's first request imported nothing: nothing to prove"
    assert unprepared["tls_contexts"] == 1
    for before in ("prepared", "started"):
        found = first_request(standin.address, before, tmp_path / before)
        assert found == {"status": 200, "imported": [], "tls_contexts": 0}, before


def test_requests_to_phones_share_one_client_per_loop_and_tls_setting(
    phones: Callable[..., StandIn], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client made and closed for each request took 0.12-0.2 ms of CPU, a third of a poll of a
    phone that refuses it. One client serves every request of a loop with the same TLS setting."""
    standin = phones()
    made: list[bool] = []

    class Counted(httpx.AsyncClient):
        def __init__(self, **settings: Any) -> None:
            made.append(settings["verify"].verify_mode == ssl.CERT_REQUIRED)
            super().__init__(**settings)

    monkeypatch.setattr(httpx, "AsyncClient", Counted)

    async def polls() -> list[int | None]:
        statuses = []
        for verify in (True, True, False, True, False):
            outcome = await send(
                Target(standin.address, verify_tls=verify), render(REACHABILITY, {}), YEALINK_COMMANDS
            )
            statuses.append(outcome.http_status)
        await CLIENTS.close()
        return statuses

    assert asyncio.run(polls()) == [200] * 5
    assert made == [True, False]
    asyncio.run(polls())  # another loop: clients of its own
    assert made == [True, False, True, False]
    assert len(standin.requests()) == 10


def test_each_request_to_a_phone_has_a_connection_of_its_own_and_sends_no_cookie(
    phones: Callable[..., StandIn],
) -> None:
    """Shared clients, and still each request as if its client were new: a phone's small web
    server is not left holding idle connections, and a cookie it sets is not sent back."""
    standin = phones(keep_alive=True, headers=[("Set-Cookie", "session=abc123; Path=/")])
    target = Target(standin.address, timeout=2.0)

    async def three() -> list[int | None]:
        statuses = [
            (await send(target, render(REACHABILITY, {}), YEALINK_COMMANDS)).http_status for _ in range(3)
        ]
        await CLIENTS.close()
        return statuses

    assert asyncio.run(three()) == [200, 200, 200]
    seen = standin.requests()
    assert len({s.peer for s in seen}) == 3
    assert [s.cookie for s in seen] == [None, None, None]
