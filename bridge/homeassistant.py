"""Home Assistant MQTT discovery (CONTRACT §4): one device-based message per phone. Pure.

Keys use Home Assistant's documented abbreviations. Component ids and unique ids are part of
the public contract: renaming one makes Home Assistant drop the entity and create a new one,
breaking users' automations, so they never change.
"""

import re
from collections.abc import Mapping

from bridge import __version__
from bridge.calls import CallResult, CallState
from bridge.events import EventType, format_mac
from bridge.frozen import frozen
from bridge.profiles import BUILTIN_PROFILES, Profile, profile_for
from bridge.topics import BridgeTopic, DeviceTopic, Topics

Json = dict[str, object]

ORIGIN_NAME = "amego-bridge"
CALL_ENDED = "call_ended"  # derived by the bridge, not sent by phones
EVENT_TYPES: tuple[str, ...] = (*(e.value for e in EventType), CALL_ENDED)

# What the bridge dials (CONTRACT §3), or a little less: digits with an optional leading + and
# * and #, written with spaces, dots, dashes or brackets; or a SIP URI. Anchored both ends:
# Home Assistant checks it with re.match; browsers compile it with the `v` flag, which wants
# ( ) . - escaped inside brackets.
NUMBER_PATTERN = (
    r"^(\(?\+?[0-9*#][0-9*# \(\)\.\-]{0,63}"
    r"|sips?:([A-Za-z0-9._~+*\-]{1,64}@)?[A-Za-z0-9.\-]{1,100}(:[0-9]{1,5})?)$"
)
NUMBER_MAX = 128

_NOT_ID = re.compile(r"[^a-zA-Z0-9_-]")

# Templates Home Assistant renders on our payloads. A rendered "None" makes a sensor unknown.
STATE = "{{ value_json.state }}"
EVENT_TYPE = "{{ value_json.event_type }}"
MISSED = "{{ value_json.call.result if value_json.event_type == 'call_ended' else '' }}"
LAST_RESULT = "{{ value_json.last_call.result if value_json.last_call else none }}"
LAST_CALL = "{{ (value_json.last_call or {}) | tojson }}"
OFF_HOOK = "{{ 'ON' if value_json.hook == 'off' else 'OFF' }}"
RINGING = "{{ 'ON' if value_json.state == 'ringing' else 'OFF' }}"
REGISTERED = "{{ 'ON' if 'registered' in (value_json.lines or {}).values() else 'OFF' }}"
DND = "{% if value_json.dnd is none %}None{% elif value_json.dnd %}ON{% else %}OFF{% endif %}"


def value_of(key: str) -> str:
    return "{{ value_json." + key + " }}"


@frozen
class DeviceInfo:
    """What discovery shows of a phone; a change of any field republishes it."""

    id: str
    mac: str | None = None  # 12 lowercase hex digits
    name: str = ""
    phone_type: str = "generic"
    model: str | None = None
    firmware: str | None = None
    ip: str | None = None


def object_id(device_id: str) -> str:
    """The discovery object id, `amego_<id>`, in the characters Home Assistant allows."""
    return "amego_" + _NOT_ID.sub("_", device_id)


def config_topic(prefix: str, device_id: str) -> str:
    return f"{prefix}/device/{object_id(device_id)}/config"


def status_topic(prefix: str) -> str:
    """Where Home Assistant announces itself (`online`) and its last will (`offline`)."""
    return f"{prefix}/status"


def discovery_clear(prefix: str, device_id: str) -> tuple[str, bytes]:
    """The topic and empty payload that, published retained, remove a phone from Home Assistant."""
    return config_topic(prefix, device_id), b""


def configuration_url(ip: str | None) -> str | None:
    """The phone's own web interface, for the "Visit" link on the device page."""
    if not ip or "%" in ip or "/" in ip:
        return None
    host = f"[{ip}]" if ip.count(":") > 1 and not ip.startswith("[") else ip
    return f"http://{host}"


def device_name(info: DeviceInfo, profile: Profile) -> str:
    return info.name or f"{profile.vendor} phone {info.id}"


def discovery(
    info: DeviceInfo,
    topics: Topics,
    origin_url: str,
    qos: int = 1,
    profiles: Mapping[str, Profile] = BUILTIN_PROFILES,
) -> Json:
    """The device-based discovery payload of one phone."""
    profile = profile_for(info.phone_type, profiles)
    device: Json = {"ids": [object_id(info.id)], "name": device_name(info, profile), "mf": profile.vendor}
    if info.mac:
        device["cns"] = [["mac", format_mac(info.mac)]]
    if info.model:
        device["mdl"] = info.model
    if info.firmware:
        device["sw"] = info.firmware
    if url := configuration_url(info.ip):
        device["cu"] = url
    return {
        "dev": device,
        "o": {"name": ORIGIN_NAME, "sw": __version__, "url": origin_url},
        "avty": [
            {"topic": topics.bridge(BridgeTopic.STATE), "value_template": STATE},
            {"topic": topics.device(info.id, DeviceTopic.AVAILABILITY), "value_template": STATE},
        ],
        "avty_mode": "all",
        "qos": qos,
        "cmps": components(info.id, topics),
    }


def components(device_id: str, topics: Topics) -> dict[str, Json]:
    """Every entity and trigger of a phone, keyed by component id."""

    def topic(leaf: DeviceTopic) -> str:
        return topics.device(device_id, leaf)

    call, status, event = topic(DeviceTopic.CALL), topic(DeviceTopic.STATUS), topic(DeviceTopic.EVENT)
    command = topic(DeviceTopic.COMMAND)
    entities: dict[str, Json] = {
        "call_state": {
            "p": "sensor",
            "name": "Call state",
            "ic": "mdi:phone",
            "stat_t": call,
            "val_tpl": STATE,
            "dev_cla": "enum",
            "ops": [s.value for s in CallState],
            "json_attr_t": call,
        },
        "remote_number": {
            "p": "sensor",
            "name": "Remote number",
            "ic": "mdi:numeric",
            "stat_t": call,
            "val_tpl": value_of("number"),
        },
        "remote_name": {
            "p": "sensor",
            "name": "Remote name",
            "ic": "mdi:account",
            "stat_t": call,
            "val_tpl": value_of("name"),
        },
        "line": {
            "p": "sensor",
            "name": "Line",
            "ic": "mdi:phone-classic",
            "stat_t": call,
            "val_tpl": value_of("line"),
        },
        "last_call_result": {
            "p": "sensor",
            "name": "Last call result",
            "ic": "mdi:phone-log",
            "stat_t": call,
            "val_tpl": LAST_RESULT,
            "dev_cla": "enum",
            "ops": [r.value for r in CallResult],
            "json_attr_t": call,
            "json_attr_tpl": LAST_CALL,
        },
        "event": {
            "p": "event",
            "name": "Event",
            "ic": "mdi:phone-message",
            "stat_t": event,
            "evt_typ": list(EVENT_TYPES),
        },
        "off_hook": {
            "p": "binary_sensor",
            "name": "Off hook",
            "ic": "mdi:phone-off",
            "stat_t": status,
            "val_tpl": OFF_HOOK,
        },
        "ringing": {
            "p": "binary_sensor",
            "name": "Ringing",
            "ic": "mdi:phone-ring",
            "stat_t": call,
            "val_tpl": RINGING,
        },
        "registered": {
            "p": "binary_sensor",
            "name": "Registered",
            "dev_cla": "connectivity",
            "ent_cat": "diagnostic",
            "stat_t": status,
            "val_tpl": REGISTERED,
        },
        "dnd": {
            "p": "binary_sensor",
            "name": "Do not disturb",
            "ic": "mdi:minus-circle",
            "stat_t": status,
            "val_tpl": DND,
        },
        "dial": {
            "p": "text",
            "name": "Dial",
            "ic": "mdi:phone-dial",
            "cmd_t": topic(DeviceTopic.DIAL),
            "min": 1,
            "max": NUMBER_MAX,
            "mode": "text",
            "ptrn": NUMBER_PATTERN,
        },
        "answer": {
            "p": "button",
            "name": "Answer",
            "ic": "mdi:phone-in-talk",
            "cmd_t": command,
            "pl_prs": "answer",
        },
        "hangup": {
            "p": "button",
            "name": "Hang up",
            "ic": "mdi:phone-hangup",
            "cmd_t": command,
            "pl_prs": "hangup",
        },
    }
    for key, entity in entities.items():
        entity["uniq_id"] = f"{object_id(device_id)}_{key}"
    triggers: dict[str, Json] = {
        "incoming_call": trigger(event, "incoming", EVENT_TYPE, "incoming_call"),
        "missed_call": trigger(event, "missed", MISSED, CallResult.MISSED.value),
        "call_ended": trigger(event, "ended", EVENT_TYPE, CALL_ENDED),
    }
    return entities | triggers


def trigger(topic: str, subtype: str, template: str, payload: str) -> Json:
    """A device trigger: fires when `template` rendered on a message equals `payload`."""
    return {
        "p": "device_automation",
        "atype": "trigger",
        "t": topic,
        "type": "call",
        "stype": subtype,
        "val_tpl": template,
        "pl": payload,
    }
