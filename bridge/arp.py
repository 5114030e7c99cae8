"""MAC lookup for phones that send none: the kernel's ARP cache, then an ARP request (scapy)."""

import asyncio
import ipaddress
import logging
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from bridge.events import format_mac, parse_mac

log = logging.getLogger(__name__)

PROC_ARP = Path("/proc/net/arp")
PROC_ROUTE = Path("/proc/net/route")
SYS_NET = Path("/sys/class/net")
BROADCAST = "ff:ff:ff:ff:ff:ff"
_RESOLVED = 0x2  # ATF_COM: the entry is complete (0x6 adds ATF_PERM)
_RTF_UP, _RTF_GATEWAY, _RTF_REJECT = 0x1, 0x2, 0x200
_ARPHRD_ETHER = 1
_CACHE_LIMIT = 4096


class Method(StrEnum):
    """How a MAC was found, or why it was not."""

    KERNEL = "kernel"
    ARP_REQUEST = "arp_request"
    CACHE = "cache"
    NOT_ON_LINK = "not_on_link"
    NO_PERMISSION = "no_permission"
    NO_ANSWER = "no_answer"
    DISABLED = "disabled"
    UNSUPPORTED = "unsupported"


@dataclass(frozen=True, slots=True)
class Lookup:
    """The outcome of one lookup: `mac` (12 lowercase hex digits) or None, and how or why not."""

    ip: str
    mac: str | None
    method: Method
    detail: str = ""
    interface: str | None = None

    def describe(self) -> str:
        where = f" on {self.interface}" if self.interface else ""
        if self.mac:
            return f"{self.ip} is at {format_mac(self.mac)} ({self.method}: {self.detail}{where})"
        return f"{self.ip}: no MAC ({self.method}: {self.detail}{where})"


@dataclass(frozen=True, slots=True)
class Link:
    """Where an address is: on `interface`'s directly connected subnet, or behind `gateway`."""

    interface: str | None
    gateway: str | None = None
    network: ipaddress.IPv4Network | None = None


def kernel_entry(ip: str, table: Path = PROC_ARP) -> tuple[str, str] | None:
    """The MAC of `ip` and its interface from the kernel's ARP cache, when it holds a resolved entry."""
    try:
        lines = table.read_text().splitlines()[1:]
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        if len(fields) < 6 or fields[0] != ip or not int(fields[2], 16) & _RESOLVED:
            continue
        mac = parse_mac(fields[3])
        if mac:
            return mac, fields[5]
    return None


def kernel_lookup(ip: str, table: Path = PROC_ARP) -> str | None:
    """The MAC of `ip` from the kernel's ARP cache, when it holds a resolved entry."""
    entry = kernel_entry(ip, table)
    return entry[0] if entry else None


def fallback_id(ip: str) -> str:
    """The device id of a phone whose MAC is unknown: ip-192-168-1-50."""
    return "ip-" + "".join(c if c.isalnum() else "-" for c in ip.lower())


def _address(hex_value: str) -> ipaddress.IPv4Address:
    # /proc/net/route prints each network-order address as a host-order integer.
    return ipaddress.IPv4Address(struct.pack("=I", int(hex_value, 16)))


def locate(ip: ipaddress.IPv4Address, table: Path = PROC_ROUTE) -> Link | None:
    """The route the kernel would take to `ip` (longest prefix, then lowest metric); None: no route.

    Read fresh on every call, so interfaces that came up after start-up count.
    """
    try:
        lines = table.read_text().splitlines()[1:]
    except OSError:
        return None
    best: tuple[int, int, Link] | None = None
    for line in lines:
        fields = line.split()
        if len(fields) < 8:
            continue
        flags = int(fields[3], 16)
        if not flags & _RTF_UP or flags & _RTF_REJECT:
            continue
        mask = _address(fields[7])
        network = ipaddress.IPv4Network(f"{_address(fields[1])}/{mask}", strict=False)
        if ip not in network:
            continue
        gateway = str(_address(fields[2])) if flags & _RTF_GATEWAY else None
        rank = (network.prefixlen, -int(fields[6]))
        if best is None or rank > best[:2]:
            best = (*rank, Link(fields[0], gateway, network))
    return best[2] if best else None


def is_local(ip: str) -> bool:
    """Whether `ip` is an address of this host (it never answers its own ARP request)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind((ip, 0))
        except OSError:
            return False
    return True


def can_send_raw() -> bool:
    """Whether this process may send raw Ethernet frames (CAP_NET_RAW)."""
    try:
        socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0).close()
    except OSError:  # PermissionError without the capability; others where AF_PACKET is missing
        return False
    return True


def source_address(ip: str) -> str:
    """The address this host sends from towards `ip` (no packet leaves: UDP connect only routes)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect((ip, 9))
        address: str = probe.getsockname()[0]
        return address


def request_mac(ip: str, interface: str, timeout: float) -> str | None:
    """Broadcast one ARP request for `ip` on `interface`; the MAC that answers, or None. Blocks.

    Source addresses are given explicitly: scapy's own interface and route tables are read once at
    import and would be stale for an interface that came up later.
    """
    from scapy.layers.l2 import ARP, Ether  # lazily: only the active step needs scapy
    from scapy.sendrecv import srp

    own_mac = (SYS_NET / interface / "address").read_text().strip()
    frame = Ether(dst=BROADCAST, src=own_mac) / ARP(op=1, hwsrc=own_mac, psrc=source_address(ip), pdst=ip)
    answered, _ = srp(frame, iface=interface, timeout=timeout, verbose=False)
    for _, reply in answered:
        mac = parse_mac(str(reply[ARP].hwsrc))
        if mac:
            return mac
    return None


class MacResolver:
    """MACs of addresses on this host's links: the kernel's ARP cache, then a TTL cache of earlier
    answers and refusals, then an ARP request.

    Use from one event loop. Only the ARP request leaves the loop (a thread; at most `concurrency`
    at once; one per address at a time); everything before it costs microseconds.
    """

    def __init__(
        self,
        enabled: bool = True,
        timeout: float = 1.0,
        *,
        ttl: float = 300.0,
        negative_ttl: float = 30.0,
        concurrency: int = 4,
        active: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.enabled = enabled
        self.timeout = timeout
        self.ttl = ttl
        self.negative_ttl = negative_ttl
        self.clock = clock
        self.permitted = active  # None: not checked yet
        self.cache: dict[str, tuple[float, Lookup]] = {}
        self.pending: dict[str, asyncio.Task[Lookup]] = {}
        self.slots = asyncio.Semaphore(concurrency)

    def start(self, announce: bool = True) -> bool:
        """Whether ARP requests may be sent, checked once; without CAP_NET_RAW, a warning once."""
        if self.permitted is None:
            self.permitted = self.enabled and can_send_raw()
            if self.enabled and not self.permitted and announce:
                log.warning(
                    "no CAP_NET_RAW: MACs of phones that send none come only from the kernel's ARP "
                    "cache; grant NET_RAW (Docker: cap_add NET_RAW, with host networking) for ARP requests"
                )
        return self.permitted

    def known(self, ip: str) -> Lookup | Link:
        """What can be said without sending anything; a Link when only an ARP request can tell.

        ValueError when `ip` is not an IP address.
        """
        address = normalise(ip)
        ip = str(address)
        if not self.enabled:
            return Lookup(ip, None, Method.DISABLED, "arp.enabled is false")
        if isinstance(address, ipaddress.IPv6Address):
            return Lookup(ip, None, Method.UNSUPPORTED, "IPv6 has no ARP; let the phone send device=$mac")
        entry = kernel_entry(ip)
        if entry:
            return Lookup(ip, entry[0], Method.KERNEL, "the kernel's ARP cache", entry[1])
        now = self.clock()
        cached = self.cache.get(ip)
        if cached and cached[0] > now:
            earlier = cached[1]
            if earlier.mac is None:
                return earlier
            return Lookup(ip, earlier.mac, Method.CACHE, f"{earlier.detail}, earlier", earlier.interface)
        link = locate(address)
        network = link.network if link and link.gateway is None else None
        if network and network.prefixlen < 31 and address == network.broadcast_address:
            why = f"the broadcast address of {network}"
        elif is_local(ip):
            why = "an address of this host"
        elif link is None:
            why = "no route to it"
        elif link.gateway is not None:
            why = f"not on a directly connected subnet (routed via {link.gateway})"
        elif _link_type(link.interface) != _ARPHRD_ETHER:
            why = f"{link.interface} is not an Ethernet link"
        elif not self.start():
            why = "not in the kernel's ARP cache, and ARP requests need CAP_NET_RAW"
            return Lookup(ip, None, Method.NO_PERMISSION, why, link.interface)
        else:
            return link
        return self._keep(Lookup(ip, None, Method.NOT_ON_LINK, why), now)

    async def lookup(self, ip: str) -> Lookup:
        """The MAC of `ip` and how it was found, or why not. ValueError when `ip` is not an IP."""
        found = self.known(ip)
        if isinstance(found, Lookup):
            return found
        ip = str(normalise(ip))
        task = self.pending.get(ip)
        if task is None:
            task = asyncio.create_task(self._ask(ip, found))
            self.pending[ip] = task
            task.add_done_callback(lambda _: self.pending.pop(ip, None))
        # Shielded: one caller giving up must not cancel the answer others wait for.
        return await asyncio.shield(task)

    async def _ask(self, ip: str, link: Link) -> Lookup:
        assert link.interface is not None
        async with self.slots:
            try:
                mac = await asyncio.to_thread(request_mac, ip, link.interface, self.timeout)
            except Exception as err:  # scapy's own errors too: a failed lookup must not fail the hit
                log.exception("ARP request for %s on %s failed", ip, link.interface)
                failed = Lookup(ip, None, Method.NO_ANSWER, f"ARP request failed: {err}", link.interface)
                return self._keep(failed, self.clock())
        if mac is None:
            found = Lookup(ip, None, Method.NO_ANSWER, f"no answer within {self.timeout:g} s", link.interface)
        else:
            found = Lookup(ip, mac, Method.ARP_REQUEST, "answered an ARP request", link.interface)
        return self._keep(found, self.clock())

    def _keep(self, found: Lookup, now: float) -> Lookup:
        if len(self.cache) >= _CACHE_LIMIT:
            self.cache = {ip: entry for ip, entry in self.cache.items() if entry[0] > now}
            if len(self.cache) >= _CACHE_LIMIT:
                self.cache.clear()
        self.cache[found.ip] = (now + (self.ttl if found.mac else self.negative_ttl), found)
        return found


def normalise(ip: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """An address as a socket reports it; IPv4-mapped IPv6 as IPv4. ValueError when not an IP."""
    address = ipaddress.ip_address(ip.split("%", 1)[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped
    return address


def _link_type(interface: str | None) -> int | None:
    try:
        return int((SYS_NET / str(interface) / "type").read_text())
    except (OSError, ValueError):
        return None
