"""Whether each phone is there: heard from (a hit, a successful poll), polled, or silent long
enough (`devices.offline_after`) to go offline."""

import asyncio
import logging
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta

from bridge.poll import Availability
from bridge.registry import Device

log = logging.getLogger(__name__)

# How often the tick looks for phones silent past devices.offline_after: a sixtieth of that, at
# most once a minute (a look walks every phone, on the loop).
OFFLINE_CHECKS = 60
OFFLINE_CHECK_EVERY = timedelta(minutes=1)
OFFLINE_BATCH = 50  # silent phones taken offline a loop turn (27 µs each with 10,000 phones)
OFFLINE_LINES = 10  # phones gone offline in one tick that get a log line each; beyond, one line for all

# Takes a phone online or offline: `(device, online, why, quiet)`, quiet logging it at debug.
SetOnline = Callable[[Device, bool, str, bool], None]


class Presence:
    def __init__(
        self,
        devices: Mapping[str, Device],
        offline_after: float,
        clock: Callable[[], datetime],
        set_online: SetOnline,
    ) -> None:
        self.devices = devices
        self.silence = timedelta(seconds=offline_after)  # zero: phones never go offline by silence
        self.why = f"nothing heard for {offline_after:g} s"
        self.clock = clock
        self.set_online = set_online
        self.polled: dict[str, Availability] = {}  # per device, from its polls
        self.heard: dict[str, datetime] = {}  # per device: its last hit or successful poll
        self._check_due: datetime | None = None  # the tick's next look for silent phones
        self._offline_due: asyncio.Handle | None = None  # the next batch of silent phones going offline

    def hit(self, device_id: str, now: datetime) -> None:
        """A hit from the phone: it is there, whatever polls said."""
        self.heard[device_id] = now
        if device_id in self.polled:
            self.polled[device_id] = self.polled[device_id].after(True)

    def poll(self, device: Device, reachable: bool, now: datetime) -> bool | None:
        """A poll's answer: whether the phone is online now, as its polls tell (None: they do not
        tell yet)."""
        availability = self.polled.get(device.id, Availability(online=device.online)).after(reachable)
        self.polled[device.id] = availability
        if reachable:
            self.heard[device.id] = now
        return availability.online

    def tick(self, now: datetime) -> None:
        """Phones silent past `devices.offline_after` go offline, when this tick looks for them."""
        if not self.silence or not self._check(now):
            return
        cutoff = now - self.silence
        silent = [device.id for device in self.devices.values() if self._silent(device, cutoff)]
        # After a long stop, every phone at once: one line, not one per phone.
        quiet = len(silent) > OFFLINE_LINES
        if quiet:
            shown = ", ".join(silent[:OFFLINE_LINES])
            log.info("%d phones are offline: %s (%s, …)", len(silent), self.why, shown)
        self._take_offline(silent, quiet)

    def stop(self) -> None:
        if self._offline_due is not None:
            self._offline_due.cancel()
            self._offline_due = None

    def _silent(self, device: Device, cutoff: datetime) -> bool:
        """Online, and neither a hit nor a successful poll since `cutoff`."""
        heard = self.heard.get(device.id, device.phone.last_seen)
        return bool(device.online) and heard is not None and heard < cutoff

    def _take_offline(self, ids: list[str], quiet: bool, start: int = 0) -> None:
        """OFFLINE_BATCH phones from `start` now, the next batch on the next loop turn. After a
        long stop the first tick finds every phone silent: 10,000 at once held the loop 335 ms."""
        self.stop()  # a look for silent phones found them all again
        cutoff = self.clock() - self.silence
        end = start + OFFLINE_BATCH
        for device_id in ids[start:end]:
            device = self.devices.get(device_id)
            if device is not None and self._silent(device, cutoff):  # not heard, nor removed, meanwhile
                self.set_online(device, False, self.why, quiet)
        if end < len(ids):  # the list as found, not copied again for each batch
            self._offline_due = asyncio.get_running_loop().call_soon(self._take_offline, ids, quiet, end)

    def _check(self, now: datetime) -> bool:
        """Whether this tick looks for silent phones: every OFFLINE_CHECKS-th of the silence, at
        most OFFLINE_CHECK_EVERY apart, so a phone goes offline that much late at most."""
        every = min(self.silence / OFFLINE_CHECKS, OFFLINE_CHECK_EVERY)
        due = self._check_due
        if due is not None and now < due <= now + every:  # (past `every` ahead: the clock went back)
            return False
        self._check_due = now + every
        return True
