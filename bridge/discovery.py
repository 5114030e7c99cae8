"""Home Assistant discovery kept current: what to publish when, built by bridge.homeassistant."""

import asyncio
import random
from collections.abc import Callable, Iterable

from bridge import homeassistant
from bridge.config import HomeAssistantConfig
from bridge.mqtt import Message
from bridge.payloads import encode
from bridge.registry import Device
from bridge.topics import Topics


class Discovery:
    def __init__(
        self,
        config: HomeAssistantConfig,
        topics: Topics,
        qos: int,
        http_url: Callable[[], str],
        publish: Callable[[list[Message]], None],
    ) -> None:
        self.config = config
        self.topics = topics
        self.qos = qos
        self.http_url = http_url
        self.publish = publish
        self.published: dict[str, homeassistant.DeviceInfo] = {}  # what HA was last told, per device
        self.delay = 5.0  # seconds, upper bound of the random delay after HA's `online`
        self.timer: asyncio.TimerHandle | None = None

    @property
    def status_topic(self) -> str:
        return homeassistant.status_topic(self.config.discovery_prefix)

    def subscriptions(self) -> list[str]:
        return [self.status_topic] if self.config.enabled else []

    def _info(self, device: Device) -> homeassistant.DeviceInfo:
        phone = device.phone
        return homeassistant.DeviceInfo(
            device.id, device.mac, device.name, phone.phone_type, phone.model, phone.firmware, phone.ip
        )

    def _message(self, info: homeassistant.DeviceInfo) -> Message:
        payload = homeassistant.discovery(info, self.topics, self.http_url(), self.qos)
        topic = homeassistant.config_topic(self.config.discovery_prefix, info.id)
        return Message(topic, encode(payload), retain=self.config.retain, qos=self.qos)

    def all(self, devices: Iterable[Device]) -> list[Message]:
        """Discovery of every phone; with discovery disabled, the payloads that clear ours."""
        if not self.config.enabled:
            return [self.clear(device.id) for device in devices]
        messages = []
        for device in devices:
            info = self._info(device)
            messages.append(self._message(info))
            self.published[device.id] = info
        return messages

    def update(self, device: Device) -> None:
        """Publish a phone's discovery when it is new or what it shows (name, model, …) changed."""
        if not self.config.enabled:
            return
        info = self._info(device)
        if self.published.get(device.id) != info:
            self.publish([self._message(info)])
            self.published[device.id] = info

    def clear(self, device_id: str) -> Message:
        """The retained empty payload that removes a phone from Home Assistant."""
        self.published.pop(device_id, None)
        topic, payload = homeassistant.discovery_clear(self.config.discovery_prefix, device_id)
        return Message(topic, payload, retain=True, qos=self.qos)

    def on_status(self, payload: bytes, republish_all: Callable[[], None]) -> None:
        """HA's birth message: republish after a random delay (every MQTT client answers it)."""
        if payload.strip() != b"online" or not self.config.enabled or self.timer is not None:
            return

        def republish() -> None:
            self.timer = None
            republish_all()

        delay = random.uniform(0, self.delay)
        self.timer = asyncio.get_running_loop().call_later(delay, republish)
