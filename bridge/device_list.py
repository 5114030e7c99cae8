"""`<base>/bridge/devices`, the whole list of phones: restated when a phone joins, moves or changes
what the list shows, at most once a spacing that grows with the list."""

import asyncio
import contextlib
from collections.abc import Callable

from bridge.mqtt import Message
from bridge.outbound import Outbound
from bridge.registry import Registry

# The list is O(phones) to build: restated at most this often (seconds), so a thousand phones
# joining cost a few lists, not a thousand. And at most once every DEVICES_EVERY per
# DEVICES_PER_EVERY phones: with 10,000 booting, each restatement (2.6 MB) held the loop 21-29 ms,
# and went to the broker and to every subscriber of `<base>/#`.
DEVICES_EVERY = 1.0
DEVICES_PER_EVERY = 1000
# Phones' entries encoded a loop turn before a planned restatement, which then only joins them:
# 10,000 entries at once held the loop 77-88 ms.
DEVICES_BATCH = 500


class DeviceList:
    def __init__(self, registry: Registry, out: Outbound, publish: Callable[[list[Message]], None]) -> None:
        self.registry = registry
        self.out = out
        self.publish_forced = publish
        self.due: asyncio.TimerHandle | None = None  # a later restatement
        self._encoding: asyncio.Task[None] | None = None  # its entries, a batch a loop turn
        self._sent = float("-inf")  # loop time of the last one

    def changed(self) -> None:
        """Restate the list once its spacing has passed since the last time (`every`), its
        entries encoded DEVICES_BATCH a loop turn first."""
        if self.due is not None or self._encoding is not None:
            return  # already planned: it will show this change too
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.publish()
            return
        wait = self._sent + self.every() - loop.time()
        self.due = loop.call_later(max(wait, 0.0), self._encode)

    def _encode(self) -> None:
        self.due = None
        self._encoding = asyncio.get_running_loop().create_task(self._encoded())

    async def _encoded(self) -> None:
        devices = list(self.registry.devices.values())
        for start in range(0, len(devices), DEVICES_BATCH):
            for device in devices[start : start + DEVICES_BATCH]:
                device.entry_json()  # kept by the device until it changes
            await asyncio.sleep(0)
        self._encoding = None
        self.publish()

    def every(self) -> float:
        """Seconds between restatements: 1 up to 1,000 phones, 10 with 10,000."""
        return DEVICES_EVERY * max(1.0, len(self.registry.devices) / DEVICES_PER_EVERY)

    def message(self) -> Message:
        """The list as the registry stands."""
        return self.out.devices(self.registry.devices_json())

    def publish(self) -> None:
        """The list as the registry stands, now; what was planned is no longer needed."""
        if self.due is not None:
            self.due.cancel()
            self.due = None
        if self._encoding is not None:
            self._encoding.cancel()
            self._encoding = None
        with contextlib.suppress(RuntimeError):
            self._sent = asyncio.get_running_loop().time()
        self.publish_forced([self.message()])

    def flush(self) -> None:
        """A planned restatement, now (before stopping)."""
        if self.due is not None or self._encoding is not None:
            self.publish()
