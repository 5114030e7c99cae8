"""Discovery payloads checked against Home Assistant's documented MQTT discovery schema.

The schema below is written down from Home Assistant's MQTT documentation (integrations/mqtt,
sensor/binary_sensor/event/text/button/device_trigger .mqtt pages and the list of supported
abbreviations). Templates are rendered with Jinja2's sandbox, as Home Assistant does, on the
payloads the bridge really publishes.
"""

import json
import re
import shutil
import socket
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from jinja2 import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from paho.mqtt.client import topic_matches_sub

from bridge import payloads
from bridge.calls import Call, CallRecord, CallResult, CallState, Direction, Hook, LineState, Phone
from bridge.commands import CommandRefused, valid_number
from bridge.config import parse_config
from bridge.events import EventType, RawHit, parse_hit
from bridge.homeassistant import (
    EVENT_TYPES,
    NUMBER_PATTERN,
    DeviceInfo,
    config_topic,
    discovery,
    discovery_clear,
    object_id,
)
from bridge.mqtt import Endpoint
from bridge.profiles import profile_for
from bridge.service import Bridge
from bridge.topics import BridgeTopic, DeviceTopic, Topics

MAC = "001565aabbcc"
NOW = datetime(2026, 11, 26, 8, 40, 55, 123000, tzinfo=UTC)
ORIGIN_URL = "http://192.168.1.2:8080"

# ---- Home Assistant's discovery schema, as data ------------------------------------------------

ABBREVIATIONS = {
    "atype": "automation_type", "avty": "availability", "avty_mode": "availability_mode",
    "avty_t": "availability_topic", "avty_tpl": "availability_template", "cmd_t": "command_topic",
    "cmd_tpl": "command_template", "cmps": "components", "def_ent_id": "default_entity_id",
    "dev": "device", "dev_cla": "device_class", "e": "encoding", "en": "enabled_by_default",
    "ent_cat": "entity_category", "ent_pic": "entity_picture", "evt_typ": "event_types",
    "exp_aft": "expire_after", "frc_upd": "force_update", "ic": "icon",
    "json_attr_t": "json_attributes_topic", "json_attr_tpl": "json_attributes_template",
    "max": "max", "min": "min", "mode": "mode", "name": "name",
    "o": "origin", "obj_id": "object_id", "off_dly": "off_delay", "ops": "options", "p": "platform",
    "pl": "payload", "pl_avail": "payload_available", "pl_not_avail": "payload_not_available",
    "pl_off": "payload_off", "pl_on": "payload_on", "pl_prs": "payload_press", "ptrn": "pattern",
    "ret": "retain", "stat_cla": "state_class", "stat_t": "state_topic", "stype": "subtype", "t": "topic",
    "uniq_id": "unique_id", "unit_of_meas": "unit_of_measurement", "val_tpl": "value_template",
}  # fmt: skip
DEVICE_ABBREVIATIONS = {
    "cns": "connections", "cu": "configuration_url", "hw": "hw_version", "ids": "identifiers",
    "mdl": "model", "mdl_id": "model_id", "mf": "manufacturer", "name": "name", "sa": "suggested_area",
    "sn": "serial_number", "sw": "sw_version",
}  # fmt: skip
ORIGIN_ABBREVIATIONS = {"name": "name", "sw": "sw_version", "url": "support_url"}

ROOT_OPTIONS = {
    "device", "origin", "components", "availability", "availability_mode", "availability_topic",
    "availability_template", "payload_available", "payload_not_available", "qos", "encoding",
    "state_topic", "command_topic",
}  # fmt: skip
AVAILABILITY_OPTIONS = {"topic", "payload_available", "payload_not_available", "value_template"}
ENTITY_OPTIONS = {
    "platform", "name", "unique_id", "icon", "entity_category", "enabled_by_default", "entity_picture",
    "json_attributes_topic", "json_attributes_template", "object_id", "default_entity_id", "qos", "encoding",
    "availability", "availability_mode", "availability_topic", "availability_template",
    "payload_available", "payload_not_available",
}  # fmt: skip
PLATFORM_OPTIONS: dict[str, set[str]] = {
    "sensor": ENTITY_OPTIONS | {"state_topic", "value_template", "device_class", "options",
                                "unit_of_measurement", "state_class", "expire_after", "force_update"},
    "binary_sensor": ENTITY_OPTIONS | {"state_topic", "value_template", "device_class", "payload_on",
                                       "payload_off", "off_delay", "expire_after", "force_update"},
    "event": ENTITY_OPTIONS | {"state_topic", "value_template", "event_types", "device_class"},
    "text": ENTITY_OPTIONS | {"command_topic", "command_template", "state_topic", "value_template", "min",
                              "max", "mode", "pattern", "retain"},
    "button": ENTITY_OPTIONS | {"command_topic", "command_template", "payload_press", "retain",
                                "device_class"},
    "device_automation": {"platform", "automation_type", "topic", "type", "subtype", "payload",
                          "value_template", "qos", "encoding"},
}  # fmt: skip
REQUIRED: dict[str, set[str]] = {
    "sensor": {"platform", "unique_id", "state_topic"},
    "binary_sensor": {"platform", "unique_id", "state_topic"},
    "event": {"platform", "unique_id", "state_topic", "event_types"},
    "text": {"platform", "unique_id", "command_topic"},
    "button": {"platform", "unique_id", "command_topic"},
    "device_automation": {"platform", "automation_type", "topic", "type", "subtype"},
}
DEVICE_CLASSES = {
    "sensor": {"enum", "timestamp", "duration"},
    "binary_sensor": {"connectivity", "problem", "running", "sound"},
    "event": {"doorbell", "button", "motion"},
    "button": {"identify", "restart", "update"},
}
COMMAND_KEYS = {"command_topic"}
TOPIC_KEYS = {"state_topic", "json_attributes_topic", "topic", "command_topic"}
ID = re.compile(r"[a-zA-Z0-9_-]+")

# Stable forever: a renamed component or unique id is a new entity in users' Home Assistant.
COMPONENTS = {
    "call_state": "sensor",
    "remote_number": "sensor",
    "remote_name": "sensor",
    "line": "sensor",
    "last_call_result": "sensor",
    "event": "event",
    "incoming_call": "device_automation",
    "missed_call": "device_automation",
    "call_ended": "device_automation",
    "off_hook": "binary_sensor",
    "ringing": "binary_sensor",
    "registered": "binary_sensor",
    "dnd": "binary_sensor",
    "dial": "text",
    "answer": "button",
    "hangup": "button",
}


def expand(payload: dict[str, Any], table: dict[str, str]) -> dict[str, Any]:
    """Abbreviated keys to full names (the callers check the names are options)."""
    full: dict[str, Any] = {}
    for key, value in payload.items():
        name = table.get(key, key)
        assert name not in full, f"{name!r} given twice"
        full[name] = value
    return full


def check_schema(payload: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Fails on anything Home Assistant's device discovery would refuse; the expanded components."""
    root = expand(payload, ABBREVIATIONS)
    assert set(root) <= ROOT_OPTIONS, set(root) - ROOT_OPTIONS
    assert {"device", "origin", "components"} <= set(root), "device discovery needs dev, o and cmps"
    device = expand(root["device"], DEVICE_ABBREVIATIONS)
    assert set(device) <= set(DEVICE_ABBREVIATIONS.values()), device
    assert device.get("identifiers") or device.get("connections")
    for pair in device.get("connections", []):
        assert isinstance(pair, list)
        assert len(pair) == 2
        assert all(isinstance(x, str) for x in pair)
    assert all(isinstance(v, str) and v for k, v in device.items() if k not in ("identifiers", "connections"))
    if "configuration_url" in device:
        assert re.fullmatch(r"https?://[^/\s]+", device["configuration_url"])
    origin = expand(root["origin"], ORIGIN_ABBREVIATIONS)
    assert set(origin) <= set(ORIGIN_ABBREVIATIONS.values()), origin
    assert isinstance(origin.get("name"), str), "origin name is required"
    assert origin["name"], "origin name is required"
    for item in root.get("availability", []):
        assert set(item) <= AVAILABILITY_OPTIONS, item
        assert "topic" in item, item
    assert root.get("availability_mode", "latest") in ("all", "any", "latest")
    assert root.get("qos", 0) in (0, 1, 2)
    components: dict[str, dict[str, Any]] = {}
    for key, component in root["components"].items():
        assert ID.fullmatch(key), f"component id {key!r}"
        full = expand(component, ABBREVIATIONS)
        platform = full.get("platform")
        assert platform in PLATFORM_OPTIONS, f"{key}: unknown platform {platform!r}"
        assert REQUIRED[platform] <= set(full), f"{key}: missing {REQUIRED[platform] - set(full)}"
        assert set(full) <= PLATFORM_OPTIONS[platform], f"{key}: {set(full) - PLATFORM_OPTIONS[platform]}"
        if "device_class" in full:
            assert full["device_class"] in DEVICE_CLASSES[platform], f"{key}: {full['device_class']}"
        if full.get("device_class") == "enum":
            assert full.get("options"), key
            assert len(set(full["options"])) == len(full["options"]), key
        if "entity_category" in full:
            assert full["entity_category"] in ("config", "diagnostic")
        if platform == "event":
            types = full["event_types"]
            assert types, "event_types must not be empty"
            assert len(set(types)) == len(types)
            assert all(isinstance(t, str) and t for t in types)
        if platform == "device_automation":
            assert full["automation_type"] == "trigger"
            for name in ("type", "subtype"):
                assert isinstance(full[name], str), f"{key}: {name}"
                assert full[name], f"{key}: {name}"
        if platform == "text":
            assert full.get("mode", "text") in ("text", "password")
            assert 0 <= full.get("min", 0) <= full.get("max", 255) <= 255
            re.compile(full["pattern"])
        for name in TOPIC_KEYS & set(full):
            assert not re.search(r"[+#\x00]", full[name]), f"{key}: {name} {full[name]!r}"
        components[key] = full
    return components


# ---- helpers -----------------------------------------------------------------------------------


def payload_of(info: DeviceInfo, base: str = "amego") -> dict[str, Any]:
    built = discovery(info, Topics(base), ORIGIN_URL, qos=1)
    decoded: dict[str, Any] = json.loads(payloads.encode(built))  # what goes on the wire
    return decoded


YEALINK = DeviceInfo(MAC, MAC, "", "yealink", "SIP-T46S", "66.86.0.15", "192.168.1.50")

jinja = ImmutableSandboxedEnvironment()


def render(template: str, message: bytes) -> str:
    """What Home Assistant gets from a value template on an MQTT message."""
    text = message.decode()
    try:
        value_json = json.loads(text)
    except ValueError:
        value_json = None
    return jinja.from_string(template).render(value=text, value_json=value_json)


def hit(event: str, **params: str) -> bytes:
    """The `<id>/event` payload the bridge publishes for one Action URL hit."""
    parsed = parse_hit(
        event,
        "yealink",
        [("device", MAC), *params.items()],
        profile=profile_for("yealink"),
        source="192.168.1.50",
        raw=RawHit("GET", f"/{event}/yealink", ""),
    )
    return payloads.encode(payloads.event(parsed, MAC, True, NOW, None))


def record(result: CallResult) -> CallRecord:
    return CallRecord(
        call_id="c1",
        device=MAC,
        direction=Direction.INCOMING,
        number="5551234",
        name="Alice",
        line="100",
        started=NOW - timedelta(seconds=20),
        answered=None if result is CallResult.MISSED else NOW - timedelta(seconds=10),
        ended=NOW,
        ring_seconds=10.0,
        talk_seconds=0.0 if result is CallResult.MISSED else 10.0,
        result=result,
    )


def ended(result: CallResult) -> bytes:
    return payloads.encode(payloads.call_ended(record(result), "yealink", True, NOW, None))


def ringing_phone() -> Phone:
    call = Call(
        key="1",
        state=CallState.RINGING,
        direction=Direction.INCOMING,
        number="5551234",
        name="Alice",
        line="100",
        call_id="c1",
        started=NOW,
        answered=None,
        updated=NOW,
    )
    return Phone(device=MAC, phone_type="yealink", calls=(call,))


def call_message(phone: Phone) -> bytes:
    return payloads.encode(payloads.call_state(phone, NOW))


def status_message(phone: Phone) -> bytes:
    return payloads.encode(payloads.status(phone))


def topics_named(payload: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(option, topic) for every topic the payload names."""
    for item in payload.get("avty", []):
        yield "availability", item["topic"]
    for component in payload["cmps"].values():
        full = expand(component, ABBREVIATIONS)
        for name in sorted(TOPIC_KEYS & set(full)):
            yield name, full[name]


# ---- tests -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "info",
    [
        YEALINK,
        DeviceInfo(MAC, MAC, "Front desk", "snom", None, None, None),
        DeviceInfo("ip-192-168-1-50", None, "", "generic"),
        DeviceInfo(MAC, MAC, "", "unknown-vendor", ip="fe80::1"),
        DeviceInfo(MAC, MAC, "", "grandstream", ip="192.168.1.7:8443"),
    ],
)
def test_payload_follows_the_discovery_schema(info: DeviceInfo) -> None:
    components = check_schema(payload_of(info))
    assert {key: c["platform"] for key, c in components.items()} == COMPONENTS


def test_unique_ids_are_stable_and_unique() -> None:
    components = check_schema(payload_of(YEALINK))
    ids = {key: c["unique_id"] for key, c in components.items() if "unique_id" in c}
    assert ids == {key: f"amego_{MAC}_{key}" for key in COMPONENTS if COMPONENTS[key] != "device_automation"}
    other = check_schema(payload_of(DeviceInfo("001565aabbcd", "001565aabbcd")))
    assert not set(ids.values()) & {c["unique_id"] for c in other.values() if "unique_id" in c}
    assert all(ID.fullmatch(uid) for uid in ids.values())


def test_device_block_names_the_phone() -> None:
    payload = payload_of(YEALINK)
    assert payload["dev"] == {
        "ids": [f"amego_{MAC}"],
        "cns": [["mac", "00:15:65:aa:bb:cc"]],
        "name": f"Yealink phone {MAC}",
        "mdl": "SIP-T46S",
        "mf": "Yealink",
        "sw": "66.86.0.15",
        "cu": "http://192.168.1.50",
    }
    assert payload["o"]["name"] == "amego-bridge"
    assert payload["o"]["sw"]
    assert payload["o"]["url"] == ORIGIN_URL
    named = payload_of(DeviceInfo("ip-192-168-1-50", None, "Front desk", "snom"))
    assert named["dev"] == {"ids": ["amego_ip-192-168-1-50"], "name": "Front desk", "mf": "Snom"}
    assert payload_of(DeviceInfo(MAC, MAC, ip="fe80::1"))["dev"]["cu"] == "http://[fe80::1]"


def test_discovery_topic_and_its_clearing() -> None:
    assert config_topic("homeassistant", MAC) == f"homeassistant/device/amego_{MAC}/config"
    assert discovery_clear("ha", MAC) == (f"ha/device/amego_{MAC}/config", b"")
    assert ID.fullmatch(object_id("ip-fe80--1"))
    assert object_id("weird.id/+#") == "amego_weird_id___"


def test_availability_needs_bridge_and_phone_online() -> None:
    payload = payload_of(YEALINK)
    assert payload["avty_mode"] == "all"
    topics = [item["topic"] for item in payload["avty"]]
    assert topics == ["amego/bridge/state", f"amego/{MAC}/availability"]
    for item in payload["avty"]:
        assert render(item["value_template"], payloads.encode(payloads.availability(True))) == "online"
        assert render(item["value_template"], payloads.encode(payloads.availability(False))) == "offline"


def test_every_topic_named_is_one_the_bridge_uses() -> None:
    config, _ = parse_config({"mqtt": {"base_topic": "site/phones"}}, env={})
    bridge = Bridge(config)
    subscribed = bridge.broker_settings(Endpoint("127.0.0.1", 1883)).subscriptions
    topics = Topics("site/phones")
    published = {topics.bridge(leaf) for leaf in BridgeTopic} | {
        topics.device(MAC, leaf)
        for leaf in DeviceTopic
        if leaf not in (DeviceTopic.DIAL, DeviceTopic.COMMAND)
    }
    named = list(topics_named(payload_of(YEALINK, "site/phones")))
    assert named
    for option, topic in named:
        if option in COMMAND_KEYS:
            assert any(topic_matches_sub(f, topic) for f in subscribed), (
                f"{topic} is not subscribed by the bridge"
            )
        else:
            assert topic in published, f"{option} {topic} is not published by the bridge"


def test_event_entity_lists_every_event_type() -> None:
    components = check_schema(payload_of(YEALINK))
    types = components["event"]["event_types"]
    assert set(types) == {e.value for e in EventType} | {"call_ended"}
    assert list(EVENT_TYPES) == types
    for event in ("incomingcall", "OffHook", "dnd-on", "missed"):
        assert json.loads(hit(event))["event_type"] in types
    assert json.loads(ended(CallResult.ANSWERED))["event_type"] in types


def test_call_state_sensor_reads_the_call_topic() -> None:
    components = check_schema(payload_of(YEALINK))
    sensor = components["call_state"]
    assert sensor["options"] == [s.value for s in CallState]
    assert sensor["json_attributes_topic"] == sensor["state_topic"] == f"amego/{MAC}/call"
    assert render(sensor["value_template"], call_message(ringing_phone())) == "ringing"
    assert render(sensor["value_template"], call_message(Phone(device=MAC))) == "idle"
    assert render(sensor["value_template"], call_message(Phone(device=MAC, hook=Hook.OFF))) == "offhook"


def test_remote_party_and_line_sensors() -> None:
    components = check_schema(payload_of(YEALINK))
    busy, idle = call_message(ringing_phone()), call_message(Phone(device=MAC))
    assert render(components["remote_number"]["value_template"], busy) == "5551234"
    assert render(components["remote_name"]["value_template"], busy) == "Alice"
    assert render(components["line"]["value_template"], busy) == "100"
    for key in ("remote_number", "remote_name", "line"):
        assert render(components[key]["value_template"], idle) == "None"  # Home Assistant: unknown


def test_last_call_result_and_its_attributes() -> None:
    sensor = check_schema(payload_of(YEALINK))["last_call_result"]
    assert sensor["options"] == [r.value for r in CallResult]
    missed = call_message(Phone(device=MAC, last_call=record(CallResult.MISSED)))
    assert render(sensor["value_template"], missed) == "missed"
    attributes = json.loads(render(sensor["json_attributes_template"], missed))
    assert attributes["number"] == "5551234"
    assert attributes["name"] == "Alice"
    assert attributes["ring_seconds"] == 10.0
    never = call_message(Phone(device=MAC))
    assert render(sensor["value_template"], never) == "None"
    assert json.loads(render(sensor["json_attributes_template"], never)) == {}


@pytest.mark.parametrize(
    ("key", "phone", "expected"),
    [
        ("off_hook", Phone(device=MAC, hook=Hook.OFF), "ON"),
        ("off_hook", Phone(device=MAC, hook=Hook.ON), "OFF"),
        ("registered", Phone(device=MAC, lines=(("100", LineState.REGISTERED),)), "ON"),
        (
            "registered",
            Phone(device=MAC, lines=(("100", LineState.FAILED), ("101", LineState.REGISTERED))),
            "ON",
        ),
        ("registered", Phone(device=MAC, lines=(("100", LineState.FAILED),)), "OFF"),
        ("registered", Phone(device=MAC), "OFF"),
        ("dnd", Phone(device=MAC, dnd=True), "ON"),
        ("dnd", Phone(device=MAC, dnd=False), "OFF"),
        ("dnd", Phone(device=MAC), "None"),
    ],
)
def test_status_binary_sensors(key: str, phone: Phone, expected: str) -> None:
    sensor = check_schema(payload_of(YEALINK))[key]
    assert sensor["state_topic"] == f"amego/{MAC}/status"
    assert render(sensor["value_template"], status_message(phone)) == expected


def test_ringing_binary_sensor() -> None:
    sensor = check_schema(payload_of(YEALINK))["ringing"]
    assert render(sensor["value_template"], call_message(ringing_phone())) == "ON"
    assert render(sensor["value_template"], call_message(Phone(device=MAC, hook=Hook.OFF))) == "OFF"


@pytest.mark.parametrize(
    ("message", "fired"),
    [
        (hit("incomingcall", remote="5551234", displayremote="Alice"), {"incoming_call"}),
        (ended(CallResult.MISSED), {"missed_call", "call_ended"}),
        (ended(CallResult.ANSWERED), {"call_ended"}),
        (ended(CallResult.REJECTED), {"call_ended"}),
        (hit("missed"), set()),  # the phone's own missed event: the call_ended that follows fires
        (hit("offhook"), set()),
        (b"not json", set()),
    ],
)
def test_device_triggers_fire_on_their_events(message: bytes, fired: set[str]) -> None:
    components = check_schema(payload_of(YEALINK))
    triggers = {key: c for key, c in components.items() if c["platform"] == "device_automation"}
    assert {(c["type"], c["subtype"]) for c in triggers.values()} == {
        ("call", "incoming"),
        ("call", "missed"),
        ("call", "ended"),
    }
    did = set()
    for key, trigger in triggers.items():
        assert trigger["topic"] == f"amego/{MAC}/event"
        try:
            value = render(trigger["value_template"], message)
        except TemplateError:  # Home Assistant: a template error means no match
            value = None
        if value == trigger["payload"]:
            did.add(key)
    assert did == fired


DIAL_SAMPLES = [
    ("5551234", True),
    ("+4930123456", True),
    ("*97", True),
    ("#31#5551234", True),
    ("+49 (30) 123-45", True),
    ("(030) 123.45", True),
    ("sip:alice@pbx.example", True),
    ("sips:100@10.0.0.1:5061", True),
    ("sip:100", True),
    ("1" * 64, True),
    ("", False),
    ("1" * 65, False),
    ("12+3", False),
    ("abc", False),
    ("++49", False),
    ("sip:", False),
    ("sip:a b@pbx", False),
    ("sip:x@pbx/../", False),
    ("tel:5551234", False),
    ("5551234&key=OK", False),
]


def browser_accepts(pattern: str, values: list[str]) -> list[bool]:
    """What a browser's <input pattern> says: the pattern compiled as ^(?:...)$ with the v flag."""
    node_js = shutil.which("node") or shutil.which("nodejs")
    if node_js is None:
        pytest.skip("Node.js is not installed")
    script = (
        "const [p, vs] = JSON.parse(require('fs').readFileSync(0, 'utf8'));"
        "const r = new RegExp(`^(?:${p})$`, 'v');"
        "process.stdout.write(JSON.stringify(vs.map((v) => r.test(v))));"
    )
    done = subprocess.run(
        [node_js, "-e", script],
        input=json.dumps([pattern, values]),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    accepted: list[bool] = json.loads(done.stdout)
    return accepted


def bridge_dials(number: str) -> bool:
    try:
        valid_number(number)
    except CommandRefused:
        return False
    return True


def test_dial_field_accepts_what_the_bridge_dials() -> None:
    text = check_schema(payload_of(YEALINK))["dial"]
    assert text["command_topic"] == f"amego/{MAC}/dial"
    assert text["pattern"] == NUMBER_PATTERN
    numbers = [number for number, _ in DIAL_SAMPLES]
    in_browser = browser_accepts(text["pattern"], numbers)
    for (number, valid), browser in zip(DIAL_SAMPLES, in_browser, strict=True):
        ha = bool(re.match(text["pattern"], number)) and text["min"] <= len(number) <= text["max"]
        assert ha is valid, number
        assert browser is valid, number
        if ha:  # never offer what the bridge would refuse
            assert bridge_dials(number), number


def test_buttons_send_answer_and_hangup() -> None:
    components = check_schema(payload_of(YEALINK))
    for key, command in (("answer", "answer"), ("hangup", "hangup")):
        assert components[key]["command_topic"] == f"amego/{MAC}/command"
        assert components[key]["payload_press"] == command


def test_discovery_of_many_phones_looks_up_the_bridges_own_address_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With http.host 0.0.0.0 the bridge finds its own address through the resolver, on the loop,
    and every phone's discovery carries it: Home Assistant's birth message republishes them all."""
    looked_up: list[str] = []
    real = socket.gethostbyname

    def counted(name: str) -> str:
        looked_up.append(name)
        return real(name)

    monkeypatch.setattr(socket, "gethostbyname", counted)
    config, _ = parse_config({"http": {"host": "0.0.0.0", "port": 8123}, "arp": {"enabled": False}}, env={})
    bridge = Bridge(config)
    now = datetime(2026, 11, 26, tzinfo=UTC)
    devices = [bridge.registry.new(f"0015650000{n:02x}", "yealink", True, now) for n in range(200)]
    messages = bridge.discovery.all(devices)
    assert len(messages) == 200
    assert len(looked_up) == 1
    url = bridge.http_url()
    assert url.startswith("http://")
    assert url.endswith(":8123")
    assert "0.0.0.0" not in url
    assert all(url.encode() in m.payload for m in messages)
    assert len(looked_up) == 1
