"""What each vendor's phones send: their variable names and the settings that carry each event.

Pure data. A profile tells how to read a hit from that phone type (parameter and event aliases)
and how to set the phone up (the URL to paste for each event and the setting that takes it).
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from bridge.phone_commands import (
    AASTRA_COMMANDS,
    FANVIL_COMMANDS,
    GRANDSTREAM_COMMANDS,
    HTEK_COMMANDS,
    NO_COMMANDS,
    SNOM_COMMANDS,
    YEALINK_COMMANDS,
    CommandSet,
)


@dataclass(frozen=True, slots=True)
class EventUrl:
    event: str  # canonical event name, as sent in the URL path
    setting: str  # the phone's setting (config key) that takes the URL
    query: str  # the query part, with the phone's own variables


@dataclass(frozen=True, slots=True)
class Profile:
    name: str
    vendor: str
    event_aliases: Mapping[str, str] = field(default_factory=dict)  # event_key(alias) -> canonical
    param_aliases: Mapping[str, str] = field(default_factory=dict)  # lowercase param -> canonical
    event_urls: tuple[EventUrl, ...] = ()
    setup_steps: tuple[str, ...] = ()
    commands: CommandSet = NO_COMMANDS  # remote control: dial and commands (bridge.phone_commands)
    setting_separator: str = " = "  # between a setting and its URL in a provisioning line


def _frozen(mapping: dict[str, str]) -> Mapping[str, str]:
    return MappingProxyType(mapping)


_YEALINK_DEVICE = "device=$mac&model=$model&firmware=$firmware&ip=$ip"
_YEALINK_CALL = (
    "device=$mac&local=$local&remote=$remote&displayremote=$display_remote&callid=$call_id&line=$active_user"
)


def _yealink_urls() -> tuple[EventUrl, ...]:
    call_events = [
        "incoming_call", "outgoing_call", "call_established", "call_terminated", "missed_call",
        "hold", "unhold", "held", "unheld", "transfer_call", "reject_incoming_call",
        "forward_incoming_call", "remote_busy", "call_remote_canceled", "cancel_callout",
    ]  # fmt: skip
    device_events = [
        "off_hook", "on_hook", "registered", "unregistered", "register_failed", "dnd_on", "dnd_off",
        "mute", "unmute", "setup_completed", "ip_change", "idle_to_busy", "busy_to_idle",
    ]  # fmt: skip
    settings = {"forward_on": "always_fwd_on", "forward_off": "always_fwd_off"}
    urls = [EventUrl(e, f"action_url.{e}", _YEALINK_CALL) for e in call_events]
    urls += [EventUrl(e, f"action_url.{e}", f"{_YEALINK_DEVICE}&local=$local") for e in device_events]
    urls += [EventUrl(e, f"action_url.{key}", _YEALINK_DEVICE) for e, key in settings.items()]
    return tuple(urls)


_SNOM_CALL = (
    "device=$mac&local=$local&remote=$remote&displayremote=$display_remote&callid=$call-id&ip=$phone_ip"
)
_SNOM_DEVICE = "device=$mac&local=$local&ip=$phone_ip"

# Snom settings and the events they carry; some settings have no `_url` suffix.
_SNOM_SETTINGS: tuple[tuple[str, str, str], ...] = (
    ("setup_completed", "action_setup_url", _SNOM_DEVICE),
    ("register_failed", "action_reg_failed", _SNOM_DEVICE),
    ("incoming_call", "action_incoming_url", _SNOM_CALL),
    ("outgoing_call", "action_outgoing_url", _SNOM_CALL),
    ("off_hook", "action_offhook_url", _SNOM_DEVICE),
    ("on_hook", "action_onhook_url", _SNOM_DEVICE),
    ("call_established", "action_connected_url", _SNOM_CALL),
    ("call_terminated", "action_disconnected_url", _SNOM_CALL),
    ("missed_call", "action_missed_url", _SNOM_CALL),
    ("dnd_on", "action_dnd_on_url", _SNOM_DEVICE),
    ("dnd_off", "action_dnd_off_url", _SNOM_DEVICE),
    ("forward_on", "action_redirection_on_url", _SNOM_DEVICE),
    ("forward_off", "action_redirection_off_url", _SNOM_DEVICE),
    ("log_on", "action_log_on_url", _SNOM_DEVICE),
    ("log_off", "action_log_off_url", _SNOM_DEVICE),
    ("hold", "action_hold", _SNOM_CALL),
    ("unhold", "action_unhold", _SNOM_CALL),
    ("transfer_call", "action_transfer", _SNOM_CALL),
)

# Aastra's `action uri <event>` keys (aastra.cfg) and the events they carry.
_AASTRA_CALL = "local=$$SIPUSERNAME$$&remote=$$REMOTENUMBER$$&displayremote=$$DISPLAYNAME$$&ip=$$LOCALIP$$"
_AASTRA_URLS = tuple(
    EventUrl(event, f"action uri {key}", query)
    for event, key, query in (
        ("setup_completed", "startup", "ip=$$LOCALIP$$"),
        ("registered", "registered", "local=$$SIPUSERNAME$$&ip=$$LOCALIP$$"),
        ("incoming_call", "incoming", _AASTRA_CALL),
        ("outgoing_call", "outgoing", _AASTRA_CALL),
        ("off_hook", "offhook", "local=$$SIPUSERNAME$$&ip=$$LOCALIP$$"),
        ("on_hook", "onhook", "local=$$SIPUSERNAME$$&ip=$$LOCALIP$$"),
        ("call_established", "connected", _AASTRA_CALL),
        ("call_terminated", "disconnected", _AASTRA_CALL),
    )
)

_GENERIC_URLS = tuple(
    EventUrl(e, e, "device=$mac&local=$local&remote=$remote&displayremote=$display_remote")
    for e in ("off_hook", "on_hook", "incoming_call", "outgoing_call", "call_established",
              "call_terminated", "log_on", "log_off", "registered", "register_failed")
)  # fmt: skip

BUILTIN_PROFILES: Mapping[str, Profile] = MappingProxyType(
    {
        "yealink": Profile(
            name="yealink",
            vendor="Yealink",
            event_aliases=_frozen(
                {
                    "blindtransfercall": "transfer_call",
                    "attendedtransfercall": "transfer_call",
                    "answernewincomingcall": "call_established",
                }
            ),
            param_aliases=_frozen({"callerid": "displayremote"}),
            event_urls=_yealink_urls(),
            commands=YEALINK_COMMANDS,
            setup_steps=(
                "Open the phone's web page (http://<phone-ip>, default login admin/admin).",
                "Go to Features > Action URL.",
                "Paste each URL below into the field of its event, then press Confirm.",
                "Or provision the cfg lines below (action_url.<event> = <url>).",
                "Lift the handset: amego/<mac>/call changes to offhook.",
            ),
        ),
        "snom": Profile(
            name="snom",
            vendor="Snom",
            event_aliases=_frozen(
                {
                    "setup": "setup_completed",
                    "offhook": "off_hook",
                    "onhook": "on_hook",
                    "blindtransfer": "transfer_call",
                    "attendedtransfer": "transfer_call",
                }
            ),
            param_aliases=_frozen({"phone_ip": "ip"}),
            event_urls=tuple(EventUrl(e, s, q) for e, s, q in _SNOM_SETTINGS),
            commands=SNOM_COMMANDS,
            setup_steps=(
                "Open the phone's web page (http://<phone-ip>).",
                "Go to Setup > Action URL Settings.",
                "Paste each URL below into the setting of its event, then press Save.",
                "Lift the handset: amego/<mac>/call changes to offhook.",
            ),
        ),
        "grandstream": Profile(
            name="grandstream",
            vendor="Grandstream",
            param_aliases=_frozen({"phone_ip": "ip", "product": "model", "program_version": "firmware"}),
            event_urls=_GENERIC_URLS,
            commands=GRANDSTREAM_COMMANDS,
        ),
        "fanvil": Profile(name="fanvil", vendor="Fanvil", event_urls=_GENERIC_URLS, commands=FANVIL_COMMANDS),
        "htek": Profile(
            name="htek",
            vendor="Htek",
            param_aliases=_frozen({"callerid": "displayremote"}),
            event_urls=_GENERIC_URLS,
            commands=HTEK_COMMANDS,
        ),
        "aastra": Profile(
            name="aastra",
            vendor="Aastra/Mitel",
            event_aliases=_frozen({"startup": "setup_completed"}),
            param_aliases=_frozen(
                {
                    "remotenumber": "remote",
                    "displayname": "displayremote",
                    "incomingname": "displayremote",
                    "localip": "ip",
                    "sipusername": "line",
                }
            ),
            event_urls=_AASTRA_URLS,
            commands=AASTRA_COMMANDS,
            setting_separator=": ",
        ),
        "generic": Profile(name="generic", vendor="Generic", event_urls=_GENERIC_URLS),
    }
)

BUILTIN_PHONE_TYPES: frozenset[str] = frozenset(BUILTIN_PROFILES)


def profile_for(phone_type: str, profiles: Mapping[str, Profile] = BUILTIN_PROFILES) -> Profile:
    """The profile of a phone type; an unknown type is read as `generic`."""
    return profiles.get(phone_type.lower()) or profiles["generic"]
