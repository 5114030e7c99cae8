"""What simulated desk phones send: the Action URL hits of real calls, by scenario and phone type.

Pure: the URLs come from the phone type's profile (those `amego-bridge urls` prints), with the
phone's $variables filled in the way the phone fills them. `bridge.simulate` sends them.
"""

import random
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from ipaddress import IPv4Address
from urllib.parse import quote

from bridge.profiles import BUILTIN_PROFILES


class Scenario(StrEnum):
    INCOMING_ANSWERED = "incoming_answered"
    INCOMING_MISSED = "incoming_missed"
    OUTGOING_ANSWERED = "outgoing_answered"
    OUTGOING_CANCELLED = "outgoing_cancelled"
    CALL_WAITING = "call_waiting"  # a second caller gives up while the first call is on
    DND = "dnd"
    REGISTRATION = "registration"


class Flavour(StrEnum):
    YEALINK = "yealink"
    SNOM = "snom"
    MIXED = "mixed"  # Yealink and Snom phones, alternately


# The results of the calls a scenario plays, in the order the calls end.
RESULTS: Mapping[Scenario, tuple[str, ...]] = {
    Scenario.INCOMING_ANSWERED: ("answered",),
    Scenario.INCOMING_MISSED: ("missed",),
    Scenario.OUTGOING_ANSWERED: ("answered",),
    Scenario.OUTGOING_CANCELLED: ("cancelled",),
    Scenario.CALL_WAITING: ("missed", "answered"),
    Scenario.DND: (),
    Scenario.REGISTRATION: (),
}

# How often each scenario is chosen, relative to the others.
WEIGHTS: Mapping[Scenario, int] = {
    Scenario.INCOMING_ANSWERED: 35,
    Scenario.INCOMING_MISSED: 20,
    Scenario.OUTGOING_ANSWERED: 25,
    Scenario.OUTGOING_CANCELLED: 10,
    Scenario.CALL_WAITING: 5,
    Scenario.DND: 3,
    Scenario.REGISTRATION: 2,
}

Step = tuple[str, int]  # (event, call): call 0 is a device event, 1 the first call, 2 a second one

_ANSWERED_IN: tuple[Step, ...] = (
    ("incoming_call", 1), ("off_hook", 0), ("call_established", 1), ("call_terminated", 1), ("on_hook", 0),
)  # fmt: skip
_ANSWERED_OUT: tuple[Step, ...] = (
    ("off_hook", 0), ("outgoing_call", 1), ("call_established", 1), ("call_terminated", 1), ("on_hook", 0),
)  # fmt: skip
_DIALING: tuple[Step, ...] = (("off_hook", 0), ("outgoing_call", 1))
_TALKING: tuple[Step, ...] = (("incoming_call", 1), ("off_hook", 0), ("call_established", 1))
_HANG_UP: tuple[Step, ...] = (("call_terminated", 1), ("on_hook", 0))

# What each phone type sends for a scenario; only events its profile has a URL for.
SEQUENCES: Mapping[str, Mapping[Scenario, tuple[Step, ...]]] = {
    "yealink": {
        Scenario.INCOMING_ANSWERED: _ANSWERED_IN,
        Scenario.INCOMING_MISSED: (("incoming_call", 1), ("call_remote_canceled", 1), ("missed_call", 1)),
        Scenario.OUTGOING_ANSWERED: _ANSWERED_OUT,
        Scenario.OUTGOING_CANCELLED: (*_DIALING, ("cancel_callout", 1), ("on_hook", 0)),
        Scenario.CALL_WAITING: (
            *_TALKING, ("incoming_call", 2), ("call_remote_canceled", 2), ("missed_call", 2), *_HANG_UP,
        ),
        Scenario.DND: (("dnd_on", 0), ("dnd_off", 0)),
        Scenario.REGISTRATION: (("setup_completed", 0), ("registered", 0)),
    },
    "snom": {
        Scenario.INCOMING_ANSWERED: _ANSWERED_IN,
        Scenario.INCOMING_MISSED: (("incoming_call", 1), ("call_terminated", 1), ("missed_call", 1)),
        Scenario.OUTGOING_ANSWERED: _ANSWERED_OUT,
        Scenario.OUTGOING_CANCELLED: (*_DIALING, ("call_terminated", 1), ("on_hook", 0)),
        Scenario.CALL_WAITING: (*_TALKING, ("incoming_call", 2), ("missed_call", 2), *_HANG_UP),
        Scenario.DND: (("dnd_on", 0), ("dnd_off", 0)),
        Scenario.REGISTRATION: (("setup_completed", 0), ("log_on", 0)),
    },
}  # fmt: skip

# The query of each event's URL, per phone type, with the phone's $variables.
QUERIES: Mapping[str, Mapping[str, str]] = {
    name: {url.event: url.query for url in BUILTIN_PROFILES[name].event_urls} for name in SEQUENCES
}
MODELS = {"yealink": ("SIP-T46U", "108.86.0.20"), "snom": ("snomD785", "10.1.159.12")}
NAMES = ("Alice Meyer", "Bob Schulz", "Jürgen Müller", "Zoë Martin", "Acme Support", "O'Brien, Pat", "")
DOMAIN = "pbx.sim"
FIRST_MAC = 0x020000000000  # locally administered: never a real phone's
LOOPBACK = int(IPv4Address("127.128.0.0"))  # phones on a loopback server: 127.128.0.1 and up
_VARIABLE = re.compile(r"\$([A-Za-z_][A-Za-z0-9_\-]*)")


@dataclass(frozen=True, slots=True)
class SimPhone:
    phone_type: str
    mac: str  # 12 lowercase hex digits
    extension: str
    ip: str

    @property
    def user_agent(self) -> str:
        model, firmware = MODELS[self.phone_type]
        if self.phone_type == "snom":
            return f"Mozilla/4.0 (compatible; {model} {firmware})"
        return f"Yealink {model} {firmware} {self.mac}"


@dataclass(frozen=True, slots=True)
class Peer:
    number: str
    name: str
    call_id: str


def loopback_address(index: int) -> str:
    return str(IPv4Address(LOOPBACK + 1 + index % (2**23 - 2)))


def make_phone(index: int, flavour: Flavour, ip: str | None = None) -> SimPhone:
    """Phone number `index`; its address, by default one of its own on the loopback network."""
    phone_type = flavour.value if flavour is not Flavour.MIXED else ("yealink", "snom")[index % 2]
    return SimPhone(
        phone_type=phone_type,
        mac=f"{FIRST_MAC + index + 1:012x}",
        extension=str(100 + index),
        ip=ip or loopback_address(index),
    )


def make_peer(rng: random.Random, phone: SimPhone, outgoing: bool) -> Peer:
    kind = rng.randrange(3)
    if kind == 0:
        number = f"+4930{rng.randrange(10**7):07d}"
    elif kind == 1:
        number = f"0{rng.randrange(10**9):09d}"
    else:
        number = str(rng.randrange(200, 300))
    name = "" if outgoing else rng.choice(NAMES)
    if phone.phone_type == "snom":
        call_id = f"{rng.getrandbits(48):012x}-{rng.getrandbits(40):010x}"
    else:
        call_id = f"{rng.getrandbits(64):016x}@{phone.ip}"
    return Peer(number, name, call_id)


def variables(phone: SimPhone, peer: Peer | None) -> dict[str, str]:
    """A phone's values for the $variables of its URLs; Snom spells its MAC in capitals."""
    model, firmware = MODELS[phone.phone_type]
    snom = phone.phone_type == "snom"
    values = {
        "mac": phone.mac.upper() if snom else phone.mac,
        "model": model,
        "firmware": firmware,
        "ip": phone.ip,
        "phone_ip": phone.ip,
        "local": f"{phone.extension}@{DOMAIN}" if snom else f"sip:{phone.extension}@{DOMAIN}",
        "active_user": phone.extension,
    }
    if peer is not None:
        values |= {
            "remote": f"sip:{peer.number}@{DOMAIN}",
            "display_remote": peer.name,
            "call_id": peer.call_id,
            "call-id": peer.call_id,
        }
    return values


def target(phone: SimPhone, event: str, values: Mapping[str, str]) -> str:
    """The request target of one hit: `/<event>/<type>?<query>`, each variable filled in."""

    def fill(match: re.Match[str]) -> str:
        return quote(values.get(match.group(1), ""), safe="@:")

    query = _VARIABLE.sub(fill, QUERIES[phone.phone_type][event])
    return f"/{event}/{phone.phone_type}?{query}"


def play(phone: SimPhone, scenario: Scenario, rng: random.Random) -> list[str]:
    """The request targets a phone sends, in order, for one scenario."""
    outgoing = scenario in (Scenario.OUTGOING_ANSWERED, Scenario.OUTGOING_CANCELLED)
    peers = {1: make_peer(rng, phone, outgoing), 2: make_peer(rng, phone, False)}
    return [
        target(phone, event, variables(phone, peers.get(call)))
        for event, call in SEQUENCES[phone.phone_type][scenario]
    ]
