"""Warnings and errors on `<base>/bridge/log`, as Zigbee2MQTT users know from `bridge/logging`."""

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime

from bridge import payloads

# At most this many log messages a second reach MQTT; a flood (of refused hits, say) is cut, and
# the next message that goes out says how many were left out.
PER_SECOND = 10


class MqttLogHandler(logging.Handler):
    """Hands WARNING and worse to `publish` on the event loop, from whatever thread logged."""

    def __init__(self, loop: asyncio.AbstractEventLoop, publish: Callable[[dict[str, object]], None]) -> None:
        super().__init__(logging.WARNING)
        self.loop = loop
        self.publish = publish
        self.window = 0.0
        self.sent = 0
        self.dropped = 0

    def emit(self, record: logging.LogRecord) -> None:
        now = time.monotonic()
        if now - self.window >= 1.0:
            self.window, self.sent = now, 0
        if self.sent >= PER_SECOND:
            self.dropped += 1
            return
        self.sent += 1
        payload: dict[str, object] = {
            "level": record.levelname.lower(),
            "message": record.getMessage(),
            "time": payloads.iso(datetime.fromtimestamp(record.created, UTC)),
            "logger": record.name,
        }
        if self.dropped:
            payload["dropped"] = self.dropped
            self.dropped = 0
        if not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.publish, payload)
