"""Every MQTT topic, built and parsed from one definition."""

import re
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache


class DeviceTopic(StrEnum):
    """Leaves under `<base>/<id>/`."""

    AVAILABILITY = "availability"
    STATUS = "status"
    CALL = "call"
    EVENT = "event"
    HISTORY = "history"
    RESPONSE = "response"
    DIAL = "dial"
    COMMAND = "command"


class BridgeTopic(StrEnum):
    """Leaves under `<base>/bridge/`."""

    STATE = "state"
    INFO = "info"
    DEVICES = "devices"
    EVENT = "event"
    LOG = "log"


RETAINED_DEVICE_TOPICS = (DeviceTopic.AVAILABILITY, DeviceTopic.STATUS, DeviceTopic.CALL, DeviceTopic.HISTORY)
INBOUND_DEVICE_TOPICS = (DeviceTopic.DIAL, DeviceTopic.COMMAND)

_UNSAFE = re.compile(r"[/+#\x00-\x1f\x7f]")


def sanitise_level(value: str) -> str:
    """One topic level: `/`, `+`, `#` and control characters become `_`; never empty."""
    return _UNSAFE.sub("_", value) or "_"


@lru_cache(maxsize=4096)  # every message a hit publishes names its phone's topics again
def _device_topic(base: str, device: str, leaf: DeviceTopic) -> str:
    return f"{base}/{sanitise_level(device)}/{leaf}"


@dataclass(frozen=True, slots=True)
class Inbound:
    """A topic the bridge subscribes to, parsed."""

    device: str | None  # None for bridge requests
    leaf: str  # "dial", "command", or the request name ("device/remove")


@dataclass(frozen=True, slots=True)
class Topics:
    base: str = "amego"

    def bridge(self, leaf: BridgeTopic) -> str:
        return f"{self.base}/bridge/{leaf}"

    def device(self, device: str, leaf: DeviceTopic) -> str:
        return _device_topic(self.base, device, leaf)

    def bridge_response(self, name: str) -> str:
        return f"{self.base}/bridge/response/{name}"

    def subscriptions(self) -> list[str]:
        return [f"{self.base}/+/{leaf}" for leaf in INBOUND_DEVICE_TOPICS] + [f"{self.base}/bridge/request/#"]

    def parse(self, topic: str) -> Inbound | None:
        """The device and leaf of a topic the bridge subscribes to; None for anything else."""
        prefix = f"{self.base}/"
        if not topic.startswith(prefix):
            return None
        rest = topic[len(prefix) :].split("/")
        if len(rest) >= 3 and rest[0] == "bridge" and rest[1] == "request":
            return Inbound(None, "/".join(rest[2:]))
        if len(rest) == 2 and rest[0] != "bridge" and rest[1] in INBOUND_DEVICE_TOPICS:
            return Inbound(rest[0], rest[1])
        return None
