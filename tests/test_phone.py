"""Where the bridge sends a phone's requests: its configured address, else one its hits gave."""

import asyncio
from collections.abc import Callable
from ipaddress import ip_network

import pytest

from bridge.commands import render
from bridge.config import DEFAULT_NETWORKS, ConfigError, parse_config
from bridge.phone import Outcome, Target, client, phone_address, send
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


def test_requests_share_a_client_but_each_opens_its_own_connection_and_carries_no_cookie(
    phones: Callable[..., StandIn],
) -> None:
    """One httpx client a loop serves every phone request (making one per request was most of a
    poll's CPU); it must still behave like a fresh client each time: a phone's cookie is not sent
    back, and no connection is kept for the next request."""
    standin = phones(set_cookie="sid=from-the-phone; Path=/", keep_alive=True)
    target = Target(standin.address, timeout=2.0)

    async def twice() -> tuple[list[Outcome], bool]:
        outcomes = [await send(target, render(REACHABILITY, {}), YEALINK_COMMANDS) for _ in range(2)]
        return outcomes, client(True) is client(True) and client(True) is not client(False)

    outcomes, shared = asyncio.run(twice())
    assert [o.error for o in outcomes] == [None, None]
    assert [o.http_status for o in outcomes] == [200, 200]
    assert shared
    first, second = standin.requests()
    assert first.cookie is None
    assert second.cookie is None
    assert first.client_port != second.client_port
