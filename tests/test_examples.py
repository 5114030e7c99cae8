"""The examples users copy: they parse, name only entities and topics that exist, and their code works."""

import json
import re
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from jinja2.sandbox import ImmutableSandboxedEnvironment
from paho.mqtt.client import topic_matches_sub

from bridge import payloads
from bridge.calls import CallRecord, CallResult, Direction
from bridge.config import parse_config
from bridge.homeassistant import NUMBER_PATTERN, DeviceInfo, discovery
from bridge.mqtt import Endpoint
from bridge.service import Bridge
from bridge.topics import BridgeTopic, DeviceTopic, Topics

EXAMPLES = Path(__file__).parent.parent / "examples"
MAC = "001565aabbcc"
NOW = datetime(2026, 11, 26, 8, 40, 55, 123000, tzinfo=UTC)
INBOUND = (DeviceTopic.DIAL, DeviceTopic.COMMAND)


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def entity_ids(device_name: str) -> set[str]:
    """The entity ids Home Assistant gives our entities for a phone of that name."""
    payload = discovery(DeviceInfo(MAC, MAC, device_name, "yealink"), Topics(), "http://bridge:8080")
    components: dict[str, dict[str, Any]] = payload["cmps"]  # type: ignore[assignment]
    return {
        f"{c['p']}.{slug(device_name + ' ' + c['name'])}"
        for c in components.values()
        if c["p"] != "device_automation"
    }


def entities_named(document: object) -> set[str]:
    """Every `domain.object` string under an `entity_id`/`entity` key."""
    found: set[str] = set()
    if isinstance(document, dict):
        for key, value in document.items():
            if key in ("entity_id", "entity"):
                found |= set(value) if isinstance(value, list) else {value}
            else:
                found |= entities_named(value)
    elif isinstance(document, list):
        for item in document:
            found |= entities_named(item)
    return found


def load(name: str) -> Any:
    return yaml.safe_load((EXAMPLES / "homeassistant" / name).read_text())


def bridge_topics() -> tuple[set[str], tuple[str, ...]]:
    """(topics the default bridge publishes for MAC, filters it subscribes to)."""
    config, _ = parse_config({}, env={})
    topics = Topics(config.mqtt.base_topic)
    published = {topics.bridge(leaf) for leaf in BridgeTopic} | {
        topics.device(MAC, leaf) for leaf in DeviceTopic if leaf not in INBOUND
    }
    published |= {topics.bridge_response("health_check"), f"homeassistant/device/amego_{MAC}/config"}
    subscribed = Bridge(config).broker_settings(Endpoint("127.0.0.1", 1883)).subscriptions
    return published, subscribed


def ended_call(result: CallResult, name: str | None = "Alice") -> dict[str, Any]:
    rec = CallRecord(
        call_id="c1",
        device=MAC,
        direction=Direction.INCOMING,
        number="5551234",
        name=name,
        line="100",
        started=NOW - timedelta(seconds=25),
        answered=None,
        ended=NOW,
        ring_seconds=24.6,
        talk_seconds=0.0,
        result=result,
    )
    decoded: dict[str, Any] = json.loads(
        payloads.encode(payloads.call_ended(rec, "yealink", True, NOW, None))
    )
    return decoded


def test_every_example_parses() -> None:
    found = sorted(p.name for p in EXAMPLES.rglob("*") if p.suffix in (".yaml", ".json"))
    assert found == [
        "amego-flow.json",
        "missed-call-notification.yaml",
        "pause-media-while-ringing.yaml",
        "phone-card.yaml",
    ]
    for path in EXAMPLES.rglob("*.yaml"):
        assert isinstance(yaml.safe_load(path.read_text()), dict), path
    for path in EXAMPLES.rglob("*.json"):
        assert isinstance(json.loads(path.read_text()), list), path


@pytest.mark.parametrize("name", ["pause-media-while-ringing.yaml", "phone-card.yaml"])
def test_examples_name_entities_the_bridge_creates(name: str) -> None:
    ours = entity_ids("Front desk")
    named = {e for e in entities_named(load(name)) if not e.startswith("media_player.")}
    assert named
    assert named <= ours, named - ours


def test_automations_have_the_current_shape() -> None:
    for name in ("missed-call-notification.yaml", "pause-media-while-ringing.yaml"):
        automation = load(name)
        assert automation["alias"]
        assert automation["triggers"]
        assert automation["actions"]
        assert all("trigger" in t for t in automation["triggers"])


def test_missed_call_automation_fires_on_missed_calls_only() -> None:
    automation = load("missed-call-notification.yaml")
    (trigger,) = automation["triggers"]
    published, _ = bridge_topics()
    assert any(topic_matches_sub(trigger["topic"], t) for t in published)
    jinja = ImmutableSandboxedEnvironment()
    template = jinja.from_string(trigger["value_template"])
    bridge_event = {"type": "device_joined", "data": {}}  # `amego/+/event` matches amego/bridge/event too
    messages = [ended_call(CallResult.MISSED), ended_call(CallResult.ANSWERED), bridge_event]
    fired = [template.render(value_json=m) == trigger["payload"] for m in messages]
    assert fired == [True, False, False]

    message = jinja.from_string(automation["actions"][0]["data"]["message"])
    helpers = {"as_datetime": lambda s: datetime.fromisoformat(s), "as_local": lambda d: d}
    text = message.render(trigger={"payload_json": ended_call(CallResult.MISSED)}, **helpers)
    assert " ".join(text.split()) == "Alice (5551234) called at 08:40 and rang for 25 s."
    anonymous = ended_call(CallResult.MISSED, name=None)
    text = message.render(trigger={"payload_json": anonymous}, **helpers)
    assert " ".join(text.split()).startswith("5551234 called at")


# ---- Node-RED --------------------------------------------------------------------------------------


def flow() -> list[dict[str, Any]]:
    nodes: list[dict[str, Any]] = json.loads((EXAMPLES / "node-red" / "amego-flow.json").read_text())
    return nodes


def test_node_red_flow_is_importable() -> None:
    nodes = flow()
    ids = [n["id"] for n in nodes]
    assert len(ids) == len(set(ids))
    tabs = {n["id"] for n in nodes if n["type"] == "tab"}
    brokers = {n["id"] for n in nodes if n["type"] == "mqtt-broker"}
    assert len(tabs) == 1
    assert len(brokers) == 1
    for node in nodes:
        if node["type"] in ("tab", "mqtt-broker"):
            continue
        assert node["z"] in tabs, node["id"]
        for output in node["wires"]:
            assert set(output) <= set(ids), node["id"]
        if node["type"].startswith("mqtt "):
            assert node["broker"] in brokers


def test_node_red_flow_uses_the_bridge_topics() -> None:
    published, subscribed = bridge_topics()
    nodes = flow()
    listening = [n["topic"] for n in nodes if n["type"] == "mqtt in"]
    assert listening == ["amego/+/event", "amego/+/response"]
    for topic_filter in listening:
        assert any(topic_matches_sub(topic_filter, t) for t in published), topic_filter
    sent = [n["topic"] for n in nodes if n["type"] == "inject"]
    assert sent
    for topic in sent:
        assert any(topic_matches_sub(f, topic) for f in subscribed), topic


NODE_HARNESS = """
const [code, msg] = JSON.parse(require("fs").readFileSync(0, "utf8"));
const warnings = [];
const node = { warn: (w) => warnings.push(String(w)) };
const result = new Function("msg", "node", code)(msg, node);
process.stdout.write(JSON.stringify({ result: result === undefined ? null : result, warnings }));
"""


def run_function(name: str, msg: dict[str, Any]) -> dict[str, Any]:
    """A function node of the flow run by Node.js as Node-RED runs it (body of a function of msg)."""
    node_js = shutil.which("node") or shutil.which("nodejs")
    if node_js is None:
        pytest.skip("Node.js is not installed")
    (code,) = [n["func"] for n in flow() if n["type"] == "function" and n["name"] == name]
    done = subprocess.run(
        [node_js, "-e", NODE_HARNESS],
        input=json.dumps([code, msg]),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    output: dict[str, Any] = json.loads(done.stdout)
    return output


def test_node_red_logs_calls() -> None:
    topic = f"amego/{MAC}/event"
    incoming = {"event_type": "incoming_call", "number": "5551234", "name": "Alice"}
    line = run_function("call log line", {"topic": topic, "payload": incoming})["result"]["payload"]
    assert line == f"{MAC} incoming_call Alice <5551234>"
    line = run_function("call log line", {"topic": topic, "payload": ended_call(CallResult.MISSED)})
    assert line["result"]["payload"] == f"{MAC} call_ended Alice <5551234>: missed, rang 25 s, talked 0 s"
    for payload in ({"event_type": "off_hook"}, {"type": "device_joined", "data": {}}, "not json"):
        assert run_function("call log line", {"topic": topic, "payload": payload})["result"] is None


def test_node_red_dials_from_a_dashboard_number() -> None:
    _, subscribed = bridge_topics()
    out = run_function("to dial request", {"payload": " +49 (30) 123456 "})["result"]
    assert out["topic"] == f"amego/{MAC}/dial"
    assert any(topic_matches_sub(f, out["topic"]) for f in subscribed)
    assert json.loads(out["payload"])["number"] == "+49 (30) 123456"
    (code,) = [n["func"] for n in flow() if n.get("name") == "to dial request"]
    assert f"/{NUMBER_PATTERN}/" in code  # the Dial field's check, so both accept the same numbers
    refused = run_function("to dial request", {"payload": "call mum"})
    assert refused["result"] is None
    assert refused["warnings"] == ["not a number to dial: call mum"]


# ---- mosquitto_sub recipes ---------------------------------------------------------------------------


def test_recipes_name_topics_the_bridge_uses() -> None:
    published, subscribed = bridge_topics()
    text = (EXAMPLES / "mosquitto_sub.md").read_text()
    named = re.findall(r"mosquitto_(sub|pub)[^\n]*?-t '([^']+)'", text)
    assert len(named) > 15
    for tool, topic in named:
        if tool == "sub":
            assert any(topic_matches_sub(topic, t) for t in published), topic
        elif topic != "homeassistant/status":
            assert any(topic_matches_sub(f, topic) for f in subscribed) or topic in published, topic
