"""MAC lookup for phones that send none: the kernel's ARP cache."""

from pathlib import Path

from bridge.events import parse_mac

PROC_ARP = Path("/proc/net/arp")
_RESOLVED = 0x2  # ATF_COM: the entry is complete (0x6 adds ATF_PERM)


def kernel_lookup(ip: str, table: Path = PROC_ARP) -> str | None:
    """The MAC of `ip` from the kernel's ARP cache, when it holds a resolved entry."""
    try:
        lines = table.read_text().splitlines()[1:]
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        if len(fields) < 4 or fields[0] != ip:
            continue
        if int(fields[2], 16) & _RESOLVED:
            return parse_mac(fields[3])
    return None


def fallback_id(ip: str) -> str:
    """The device id of a phone whose MAC is unknown: ip-192-168-1-50."""
    return "ip-" + "".join(c if c.isalnum() else "-" for c in ip.lower())
