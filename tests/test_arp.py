"""MAC lookup against real phones: network namespaces on a veth pair, as root with iproute2."""

import asyncio
import ctypes
import ipaddress
import json
import os
import random
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import httpx
import pytest

from bridge.arp import MacResolver, Method, fallback_id, kernel_lookup
from bridge.events import EventType, PhoneEvent
from bridge.mqtt import Endpoint
from bridge.service import Bridge
from tests.conftest import (
    TIMEOUT,
    Mosquitto,
    RunningBridge,
    Watcher,
    make_config,
    start_bridge,
    wait_until,
)

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root"),
    pytest.mark.skipif(shutil.which("ip") is None, reason="network namespaces need iproute2 (`ip`)"),
]

CLONE_NEWNET = 0x40000000
T = TypeVar("T")


def ip(*args: str) -> str:
    return subprocess.run(["ip", *args], check=True, capture_output=True, text=True).stdout


def used_networks() -> list[ipaddress.IPv4Network]:
    """Every IPv4 network this host has an address in or a route to."""
    found = []
    for link in json.loads(ip("-j", "addr")):
        for info in link.get("addr_info", []):
            if info.get("family") == "inet":
                found.append(ipaddress.IPv4Network(f"{info['local']}/{info['prefixlen']}", strict=False))
    for route in json.loads(ip("-j", "-4", "route")):
        if route["dst"] != "default":
            found.append(ipaddress.IPv4Network(route["dst"], strict=False))
    return found


def free_block() -> ipaddress.IPv4Network:
    """A random private /28 that overlaps nothing on this (shared) machine."""
    used = used_networks()
    spaces = [ipaddress.IPv4Network(n) for n in ("10.200.0.0/13", "172.30.0.0/15", "192.168.128.0/17")]
    for _ in range(200):
        space = random.choice(spaces)
        offset = 16 * random.randrange(space.num_addresses // 16)
        block = ipaddress.IPv4Network(f"{space.network_address + offset}/28")
        if not any(block.overlaps(net) for net in used):
            return block
    raise AssertionError(f"no free private /28 in {', '.join(map(str, spaces))}")


@dataclass(frozen=True)
class Phone:
    """A phone in its own network namespace, at the far end of a veth pair from this host."""

    netns: str
    veth: str  # this host's end
    host_ip: str  # this host's address on the link (the bridge listens here)
    ip: str  # the phone's address on the link
    silent_ip: str  # on the link, but nobody has it
    routed_ip: str  # the phone's second address, behind it as behind a router
    mac: str  # 12 hex digits

    @property
    def mac_text(self) -> str:
        return ":".join(self.mac[i : i + 2] for i in range(0, 12, 2))

    def join(self) -> None:
        """Move the calling thread into the phone's namespace (Python 3.11 has no os.setns)."""
        fd = os.open(f"/run/netns/{self.netns}", os.O_RDONLY)
        try:
            if ctypes.CDLL(None, use_errno=True).setns(fd, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), f"setns into {self.netns} failed")
        finally:
            os.close(fd)

    def run(self, task: Callable[[], T]) -> T:
        """`task` run from inside the phone's namespace, on a thread of its own."""
        with ThreadPoolExecutor(1, initializer=self.join) as inside:
            return inside.submit(task).result(TIMEOUT)

    def hit(self, rb: RunningBridge, path: str, source: str | None = None) -> httpx.Response:
        """An Action URL hit from the phone, from `source` (default: its address on the link)."""
        transport = httpx.HTTPTransport(local_address=source) if source else None

        def send() -> httpx.Response:
            with httpx.Client(transport=transport, timeout=TIMEOUT) as client:
                return client.get(f"http://{self.host_ip}:{rb.port}{path}")

        return self.run(send)


@pytest.fixture(scope="module")
def phone() -> Iterator[Phone]:
    tag = uuid.uuid4().hex[:8]
    block = free_block()
    hosts = list(block.hosts())
    mac = "02" + uuid.uuid4().hex[:10]
    p = Phone(f"ph-{tag}", f"vh-{tag}", str(hosts[0]), str(hosts[1]), str(hosts[2]), str(hosts[8]), mac)
    try:
        ip("netns", "add", p.netns)
        ip("link", "add", p.veth, "type", "veth", "peer", "name", "eth0", "netns", p.netns)
        ip("addr", "add", f"{p.host_ip}/29", "dev", p.veth)
        ip("link", "set", p.veth, "up")
        ip("-n", p.netns, "link", "set", "eth0", "address", p.mac_text)
        ip("-n", p.netns, "addr", "add", f"{p.ip}/29", "dev", "eth0")
        ip("-n", p.netns, "addr", "add", f"{p.routed_ip}/32", "dev", "lo")
        ip("-n", p.netns, "link", "set", "lo", "up")
        ip("-n", p.netns, "link", "set", "eth0", "up")
        ip("route", "add", f"{p.routed_ip}/32", "via", p.ip, "dev", p.veth)
        yield p
    finally:
        subprocess.run(["ip", "link", "del", p.veth], capture_output=True, check=False)
        subprocess.run(["ip", "netns", "del", p.netns], capture_output=True, check=False)


@pytest.fixture
def on_link(mosquitto: Mosquitto, base_topic: str, watcher: Watcher, phone: Phone) -> Iterator[RunningBridge]:
    """A bridge with ARP on, listening on this host's address on the phone's link."""
    config = make_config(base_topic, mosquitto.url, {"arp": {"enabled": True, "timeout": 0.3}})
    rb = start_bridge(config, Endpoint("127.0.0.1", mosquitto.port), host=phone.host_ip)
    yield rb
    rb.stop()


def lookup(resolver: MacResolver, address: str) -> tuple[float, Method, str | None, str]:
    started = time.monotonic()
    found = asyncio.run(resolver.lookup(address))
    return time.monotonic() - started, found.method, found.mac, found.describe()


def test_hit_without_mac_gets_the_phones_mac(on_link: RunningBridge, watcher: Watcher, phone: Phone) -> None:
    response = phone.hit(on_link, "/incomingcall/grandstream?remote=5551234&displayremote=Alice")
    assert (response.status_code, response.text) == (200, "OK")
    event = watcher.wait_for(f"{on_link.base}/{phone.mac}/event")
    assert event["device"] == phone.mac
    assert event["mac_resolved"] is True
    joined = watcher.wait_for(f"{on_link.base}/bridge/event", lambda p: p["type"] == "device_joined")
    assert joined["data"]["mac"] == phone.mac_text
    assert joined["data"]["ip"] == phone.ip
    call = watcher.wait_for(f"{on_link.base}/{phone.mac}/call")
    assert (call["state"], call["number"], call["name"]) == ("ringing", "5551234", "Alice")


def test_arp_request_finds_a_phone_the_kernel_forgot(phone: Phone) -> None:
    ip("neigh", "flush", "dev", phone.veth)
    assert kernel_lookup(phone.ip) is None
    resolver = MacResolver(timeout=1.0)
    took, method, mac, text = lookup(resolver, phone.ip)
    assert (method, mac) == (Method.ARP_REQUEST, phone.mac), text
    assert phone.veth in text
    # Asked again, the answer comes from the resolver's cache: no second request.
    took, method, mac, _ = lookup(resolver, phone.ip)
    assert (method, mac) == (Method.CACHE, phone.mac)
    assert took < 0.05


def test_silent_address_costs_one_timeout_then_is_remembered(phone: Phone) -> None:
    resolver = MacResolver(timeout=0.3)
    took, method, mac, text = lookup(resolver, phone.silent_ip)
    assert (method, mac) == (Method.NO_ANSWER, None), text
    assert 0.3 <= took < 1.0
    took, method, _, _ = lookup(resolver, phone.silent_ip)
    assert method is Method.NO_ANSWER
    assert took < 0.05


def test_a_hit_never_waits_for_an_arp_request(phone: Phone, mosquitto: Mosquitto, base_topic: str) -> None:
    """Only an ARP request can tell (the kernel forgot the phone): the hit goes on as `ip-…`
    while the request runs, and a later hit finds the MAC the request brought."""
    config = make_config(base_topic, mosquitto.url, {"arp": {"enabled": True, "timeout": 1.0}})
    bridge = Bridge(config)
    ip("neigh", "flush", "dev", phone.veth)
    hit = PhoneEvent("off_hook", EventType.OFF_HOOK, "yealink", source=phone.ip)

    async def twice() -> tuple[tuple[str, bool], bool, tuple[str, bool]]:
        first = await bridge.identify(hit)
        still_asking = any(not request.done() for request in bridge.arp_in_flight)
        await asyncio.gather(*bridge.arp_in_flight)
        return first, still_asking, await bridge.identify(hit)

    first, still_asking, second = asyncio.run(twice())
    assert first == (fallback_id(phone.ip), False)
    assert still_asking  # the hit was answered with the ARP request still out
    assert second == (phone.mac, True)


def test_routed_address_is_not_looked_up(phone: Phone) -> None:
    took, method, mac, text = lookup(MacResolver(timeout=1.0), phone.routed_ip)
    assert (method, mac) == (Method.NOT_ON_LINK, None)
    assert f"routed via {phone.ip}" in text
    assert took < 0.05  # no ARP request was sent: it would have waited for an answer


def test_phone_behind_a_router_moves_to_its_mac_once_known(
    on_link: RunningBridge, watcher: Watcher, mosquitto: Mosquitto, phone: Phone
) -> None:
    base = on_link.base
    old = "ip-" + phone.routed_ip.replace(".", "-")
    response = phone.hit(on_link, "/incomingcall/aastra?remote=5551234", source=phone.routed_ip)
    assert response.status_code == 200, response.text
    event = watcher.wait_for(f"{base}/{old}/event")
    assert (event["device"], event["mac_resolved"]) == (old, False)
    assert watcher.wait_for(f"{base}/{old}/call")["state"] == "ringing"
    watcher.wait_for(f"{base}/{old}/availability")

    # The same phone's next hit carries its MAC: the device moves, with its ringing call.
    response = phone.hit(on_link, f"/callestablished/aastra?device={phone.mac_text}", source=phone.routed_ip)
    assert response.status_code == 200, response.text
    updated = watcher.wait_for(f"{base}/bridge/event", lambda p: p["type"] == "device_updated")
    assert (updated["data"]["old_id"], updated["data"]["id"]) == (old, phone.mac)
    call = watcher.wait_for(f"{base}/{phone.mac}/call", lambda p: p["state"] == "talking")
    assert call["number"] == "5551234"
    old_topics = [f"{base}/{old}/{leaf}" for leaf in ("availability", "status", "call", "history")]
    wait_until(
        lambda: all(any(m.payload == b"" for m in watcher.on(t)) for t in old_topics),
        what="empty retained payloads on the old id's topics",
    )
    devices = watcher.wait_for(f"{base}/bridge/devices", lambda p: any(d["id"] == phone.mac for d in p))
    assert [d["id"] for d in devices] == [phone.mac]

    # A client that connects now sees the phone under its MAC only.
    late = Watcher(mosquitto.port, f"{base}/#")
    try:
        late.wait_for(f"{base}/{phone.mac}/status")
        late.wait_for(f"{base}/bridge/devices")
        assert not [m.topic for m in late.messages if f"/{old}/" in m.topic]
    finally:
        late.close()

    # Its later hits without a MAC follow it to its MAC id.
    response = phone.hit(on_link, "/callterminated/aastra", source=phone.routed_ip)
    assert response.status_code == 200, response.text
    event = watcher.wait_for(f"{base}/{phone.mac}/event", lambda p: p["event_type"] == "call_terminated")
    assert event["mac_resolved"] is True
    assert watcher.wait_for(f"{base}/{phone.mac}/call", lambda p: p["state"] == "idle")["last_call"]
    assert not watcher.on(f"{base}/{old}/event")[1:]


def test_learn_false_takes_configured_phones_only(
    mosquitto: Mosquitto, base_topic: str, watcher: Watcher, phone: Phone
) -> None:
    devices = {"learn": False, phone.mac: {"name": "Front desk"}}
    config = make_config(base_topic, mosquitto.url, {"arp": {"enabled": True}, "devices": devices})
    rb = start_bridge(config, Endpoint("127.0.0.1", mosquitto.port), host=phone.host_ip)
    try:
        # Known by its MAC (found by ARP): accepted.
        assert phone.hit(rb, "/offhook/snom").status_code == 200
        event = watcher.wait_for(f"{base_topic}/{phone.mac}/event")
        assert event["event_type"] == "off_hook"
        # Any other phone: refused, with the reason, in the answer and on bridge/event.
        response = rb.hit("/offhook/snom?device=00:15:65:00:00:01")
        assert response.status_code == 403
        assert "devices.learn" in response.text
        refused = watcher.wait_for(f"{base_topic}/bridge/event", lambda p: p["type"] == "request_refused")
        assert refused["data"]["status"] == 403
        assert not watcher.on(f"{base_topic}/001565000001/event")
    finally:
        rb.stop()


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AMEGO_")}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    return subprocess.run(
        [sys.executable, "-m", "bridge", "arp", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )


def test_arp_command(phone: Phone, tmp_path: Path) -> None:
    ip("neigh", "flush", "dev", phone.veth)
    found = run_cli(phone.ip, cwd=tmp_path)
    assert found.returncode == 0, found.stderr
    assert phone.mac_text in found.stdout
    assert "arp_request" in found.stdout
    assert f"device id: {phone.mac}" in found.stdout

    routed = run_cli(phone.routed_ip, cwd=tmp_path)
    assert routed.returncode == 1
    assert "not_on_link" in routed.stdout
    assert f"routed via {phone.ip}" in routed.stdout

    bad = run_cli("not-an-address", cwd=tmp_path)
    assert bad.returncode == 2
    assert "not an IP address" in bad.stderr


WITHOUT_NET_RAW = """
import asyncio, logging, sys
logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
from bridge.arp import MacResolver

resolver = MacResolver(timeout=0.3)
resolver.start()

async def main() -> None:
    for _ in range(3):
        print((await resolver.lookup(sys.argv[1])).method)

asyncio.run(main())
"""


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="dropping CAP_NET_RAW needs setpriv (util-linux)")
def test_without_net_raw_only_the_kernel_cache_is_used(phone: Phone, tmp_path: Path) -> None:
    ip("neigh", "flush", "dev", phone.veth)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AMEGO_")}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    done = subprocess.run(
        ["setpriv", "--bounding-set", "-net_raw", "--", sys.executable, "-c", WITHOUT_NET_RAW, phone.ip],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["no_permission"] * 3
    assert done.stderr.count("CAP_NET_RAW") == 1, done.stderr  # one warning, not one per lookup
