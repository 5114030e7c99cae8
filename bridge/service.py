"""The one stateful orchestrator: hits in, phones' state kept and stored, MQTT out."""

import asyncio
import logging
import socket
import sqlite3
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import fields
from datetime import UTC, datetime, timedelta
from operator import attrgetter
from pathlib import Path

from bridge import __version__, payloads
from bridge.api import Requests
from bridge.arp import Lookup, MacResolver, fallback_id, normalise
from bridge.calls import CallRecord, Phone, Transition, apply, expire
from bridge.collector import Collector
from bridge.config import Config, HttpConfig
from bridge.contacts import ContactsFile
from bridge.control import PhoneControl, Response
from bridge.device_list import DeviceList
from bridge.discovery import Discovery
from bridge.events import PhoneEvent, RawHit
from bridge.feed import DeviceChanged, HealthChanged, HitSeen, UiEvent
from bridge.frozen import frozen, replace
from bridge.keeper import CHECKPOINT_EVERY, Held, Keeper
from bridge.metrics import STORE_REFUSAL, Metrics
from bridge.mqtt import BrokerSettings, Endpoint, Inbound, Message, MqttLink
from bridge.outbound import Outbound
from bridge.poll import (
    Poller,
    PollResult,
    PollTarget,
    Turns,
    poll_target,
    reconcile,
    resync_payload,
)
from bridge.presence import Presence
from bridge.profile_files import load_profiles
from bridge.registry import Device, Registry, address_id, is_mac, registry_view
from bridge.store import CallQuery, Store
from bridge.topics import BridgeTopic, DeviceTopic, Topics

log = logging.getLogger(__name__)

# A retained status whose only change is last_seen is restated (and stored) at most this often.
LAST_SEEN_REFRESH = timedelta(seconds=60)
CONTACTS_REFRESH = 5.0  # seconds between checks of the contacts file
RETENTION_EVERY = timedelta(hours=1)
# Restating every phone's retained topics (after each connect, or HA's birth for discovery) goes
# RESTATE_BATCH phones at a time, each batch once the MQTT queue is down to RESTATE_LOW: built all
# at once for 10,000 phones, the 50,000 messages took 280 MB, and their queue refused hits.
RESTATE_BATCH = 50
RESTATE_LOW = 200
HTTP_URL_FOR = 60.0  # seconds the bridge's own address, once looked up, is used before looking again


def utcnow() -> datetime:
    return datetime.now(UTC)


class Refused(Exception):
    """A hit the bridge will not take: answered with `status` and a one-line `reason`."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


# What `<id>/status` shows of a phone, but for last_seen: every field of Phone but these.
_NOT_STATUS = ("last_seen", "calls", "last_call", "next_key")
status_view = attrgetter(*(f.name for f in fields(Phone) if f.name not in _NOT_STATUS))


def http_url(http: HttpConfig) -> str:
    """How phones reach the bridge: `http.public_url`, else this host's address and port."""
    if http.public_url:
        return http.public_url.rstrip("/")
    host = http.host
    if host in ("0.0.0.0", "::", ""):
        try:
            host = socket.gethostbyname(socket.gethostname())
        except OSError:
            host = "127.0.0.1"
    return f"http://{host}:{http.port}"


def call_changed(old: Phone, new: Phone) -> bool:
    return (old.calls, old.last_call, old.state) != (new.calls, new.last_call, new.state)


@frozen
class Outcome:
    """What a step does to a device, worked out once for its messages, its store and its commit."""

    step: Transition
    call_changed: bool  # its calls, last call or call state
    call_due: bool  # `call` is published: it changed, or the phone speaks for the first time since start
    status_due: bool  # `status` is published (`Bridge._status_due`)
    online: bool | None  # the device's `online` once committed
    call_updated: datetime | None  # and its `call_updated`
    receipts: tuple[str, ...]  # one for each ended call: its call_ended message tells the store
    # When calls ended: the phone's history once committed, newest first, and the records it
    # drops (`Bridge._history_after`). Else both empty: the history does not change.
    history: tuple[CallRecord, ...]
    dropped: tuple[CallRecord, ...]


class Bridge:
    def __init__(self, config: Config, clock: Callable[[], datetime] = utcnow) -> None:
        self.config = config
        self.clock = clock
        self.started = clock()
        self.topics = Topics(config.mqtt.base_topic)
        self.out = Outbound(self.topics, config.mqtt.qos)
        self.registry = Registry(config)
        self.link: MqttLink | None = None
        self.metrics = Metrics(lambda: self.link)
        # Observers (the status page): told of each hit, accepted or refused, and each phone's change.
        self.listeners: list[Callable[[UiEvent], None]] = []
        self.discovery = Discovery(
            config.homeassistant, self.topics, config.mqtt.qos, self.http_url, self.publish_forced
        )
        self.requests = Requests(self)
        self.profiles = load_profiles(config.profiles.dir)  # ProfileError for a bad profile file
        self.control = PhoneControl(config, self.profiles, self.phone_of, self.respond)
        self.arp = MacResolver(config.arp.enabled, config.arp.timeout)
        self.arp_in_flight: set[asyncio.Future[Lookup]] = set()  # ARP requests no hit waits for
        self.contacts = ContactsFile(config.contacts.file or None, config.contacts.country_code)
        self.backlog: list[Message] = []  # what the last run left unpublished, sent first
        self.poller = Poller(config.poll.interval, self.poll_targets, self.on_poll_result)
        self.keeper = Keeper(
            Path(config.storage.dir),
            config.calls.history_size,
            clock,
            self._held,
            lambda: self.notify(HealthChanged("storage")),
        )
        self._restating: dict[str, asyncio.Task[None]] = {}  # what is being restated, a batch at a time
        self._http_url: tuple[str, float] | None = None  # `http_url()`, and when it was found
        self.collector = Collector()
        self.device_list = DeviceList(self.registry, self.out, self.publish_forced)
        self.presence = Presence(
            self.registry.devices,
            config.devices.offline_after,
            clock,
            lambda device, online, why, quiet: self.set_online(device, online, why, quiet=quiet),
        )

    @property
    def devices(self) -> dict[str, Device]:
        return self.registry.devices

    @property
    def store(self) -> Store | None:
        return self.keeper.store

    # ---- start and stop -------------------------------------------------------------------------

    def open(self) -> None:
        """Restore what the store kept: phones, their calls and history, undelivered messages."""
        self.contacts.refresh()
        keeper = self.keeper
        store, kept = keeper.open()
        for stored, records in kept:
            self.registry.restore(stored, records)
        self.backlog = keeper.outbox()
        if keeper.killed():
            # The call_ended messages the broker never acknowledged are rebuilt, but for those the
            # outbox kept (it was killed while the broker was away).
            in_outbox = {m.receipt for m in self.backlog if m.receipt}
            rebuilt = []
            for receipt, rec in store.unannounced():
                if receipt in in_outbox:
                    continue
                device = self.devices.get(rec.device) or self.registry.new(rec.device, "generic", True, None)
                rebuilt.append(self._call_ended(device, rec, None, rec.ended, receipt))
            if rebuilt:
                self.backlog += rebuilt
                keeper.keep_queue(self.backlog)
        keeper.mark_running()
        log.info(
            "storage %s: %d phones, %d calls, %d messages to deliver",
            store.path, len(self.devices), store.count_calls(), len(self.backlog),
        )  # fmt: skip
        if self.devices:
            # What was restored lives as long as the bridge, and each full collection walked it
            # on the loop: 63-83 ms for 10,000 phones in-process, 100-160 ms in the running bridge
            # under load, where a hit takes 0.2 ms. Frozen, the collector leaves it alone;
            # reference counting still frees what a phone's next hit replaces (bridge/collector.py).
            self.collector.settle()

    def attach(self, link: MqttLink) -> None:
        self.link = link
        link.on_delivered = self.keeper.delivered
        link.on_disconnected = self._disconnected
        if self.backlog:
            link.publish(self.backlog, force=True)  # already in the outbox
            self.backlog = []
        link.on_queued_away = self.keeper.queued_away
        link.on_emptied = self.keeper.queue_emptied

    def _disconnected(self) -> None:
        self.notify(HealthChanged("mqtt"))
        if self.link is not None:
            self.keeper.keep_queue(self.link.pending())

    def _held(self) -> Held:
        """For a store started over while the bridge runs: its phones as they are, each with its
        history, and what its MQTT queue holds."""
        phones = [(device.stored(), device.history) for device in self.devices.values()]
        return phones, self.link.pending() if self.link is not None else []

    def close(self) -> None:
        """After the link's last flush: keep what it could not deliver for the next start."""
        self.collector.stop()
        self.presence.stop()
        self.keeper.close(self.link.take_pending() if self.link is not None else None)

    # ---- identity -------------------------------------------------------------------------------

    async def identify(self, event: PhoneEvent) -> tuple[str, bool]:
        """The device id of a hit, and whether it rests on a MAC: the MAC the hit carries, else a
        configured phone at its source address, else the MAC of that address (ARP), else `ip-…`."""
        if event.mac:
            return event.mac, True
        source = event.source
        if source is None:
            return fallback_id("unknown"), False
        try:
            address = str(normalise(source))
        except ValueError:
            return fallback_id(source), False
        configured = self.registry.configured_at.get(address)
        if configured is not None:
            return configured, is_mac(configured)
        known = self.arp.known(address)
        if isinstance(known, Lookup):
            found: Lookup | None = known
        else:
            # Only an ARP request can tell: it runs in the background, and this hit does not wait
            # for it. The phone is `ip-…` until a later hit finds its MAC in the cache, and then
            # moves to its MAC id.
            request = asyncio.ensure_future(self.arp.lookup(address))
            self.arp_in_flight.add(request)
            request.add_done_callback(self._arp_answered)
            found = None
        if found is not None:
            self.metrics.count_arp_lookup(found.method.value)
            if found.mac:
                return found.mac, True
        fallback = fallback_id(address)
        moved = self.registry.moved.get(fallback)
        if moved is not None and moved in self.devices:
            return moved, True
        log.debug("no MAC for %s: %s", source, found.describe() if found else "ARP request sent")
        return fallback, False

    def _arp_answered(self, request: "asyncio.Future[Lookup]") -> None:
        self.arp_in_flight.discard(request)
        if not request.cancelled() and request.exception() is None:
            self.metrics.count_arp_lookup(request.result().method.value)

    # ---- hits -----------------------------------------------------------------------------------

    def handle_hit(self, event: PhoneEvent, device_id: str, mac_resolved: bool) -> None:
        """Take one hit: update, store and queue its messages, or raise Refused and change nothing."""
        now = self.clock()
        registry = self.registry
        if event.name is None and event.number is not None:
            name = self.contacts.lookup(event.number)
            if name is not None:
                event = replace(event, name=name, name_source="contacts")
        device = registry.devices.get(device_id)
        old = registry.fallback_of(event.source, device_id, mac_resolved)
        if device is None and old is None and not registry.may_join(device_id):
            raise Refused(403, f"phone {device_id} is not in [devices] and devices.learn is false")
        messages: list[Message] = []
        if old is not None:
            device = old.moved_to(device_id, device)
            messages += [
                *self.out.clear(old.id),
                self.discovery.clear(old.id),
                *self.out.restate(device, now),
            ]
        joined = device is None or device.first_seen is None
        if device is None:
            device = registry.new(device_id, event.phone_type, mac_resolved, now)
        elif device.first_seen is None:  # a configured phone's first hit
            device = replace(device, first_seen=now)
        known = event.kind is not None
        step = apply(device.phone, event, now) if known else Transition(device.phone)
        outcome = self._outcome(device, step, now, online=known)
        messages.append(
            self.out.event(device_id, payloads.event(event, device_id, mac_resolved, now, step.matched))
        )
        messages += self._changes(device, outcome, now, event.raw)
        if joined or old is not None:  # the entry is built only then: most hits need none
            entry = replace(device, phone=step.phone).entry()
            if joined:
                messages.append(self.out.bridge_event("device_joined", entry))
            if old is not None:
                messages.append(self.out.bridge_event("device_updated", {"old_id": old.id, **entry}))
        link = self.link
        if link is None or link.room() < len(messages):
            waiting = link.queue_length if link else 0
            raise Refused(503, f"MQTT queue full ({waiting} messages waiting for the broker); try again")
        registry_changed = (
            joined or old is not None or registry_view(device.phone) != registry_view(step.phone)
        )
        self._store(device, outcome, moved_from=old.id if old else None, force=joined)
        link.publish(messages)
        if joined:
            log.info("new phone %s (%s) from %s", device_id, event.phone_type, event.source)
        if old is not None:
            del registry.devices[old.id]
            registry.moved[old.id] = device_id
            log.info("phone %s from %s is now %s: its MAC is known", old.id, event.source, device_id)
        elif mac_resolved and event.source and address_id(event.source) in registry.moved:
            registry.moved[address_id(event.source)] = device_id  # the phone at that address now
        registry.devices[device_id] = device
        if known:
            self.presence.hit(device_id, now)
        self._commit(device, outcome, now)
        if registry_changed:
            self.device_list.changed()
        self.discovery.update(device)
        if self.listeners:
            raw = event.raw
            self.notify(HitSeen(now, raw.method, raw.path, raw.query, event.source, 200, "", device_id))
            if old is not None:
                self.notify(DeviceChanged(old.id))

    def _outcome(self, device: Device, step: Transition, now: datetime, online: bool) -> Outcome:
        """`online`: the step comes from the phone itself, so it is there."""
        changed = call_changed(device.phone, step.phone)
        call_due = changed or (device.call_updated is None and online)
        history, dropped = self._history_after(device, step) if step.ended else ((), ())
        return Outcome(
            step,
            call_changed=changed,
            call_due=call_due,
            status_due=self._status_due(device, step.phone, now),
            online=True if online else device.online,
            call_updated=now if call_due else device.call_updated,
            receipts=tuple([uuid.uuid4().hex for _ in step.ended]) if step.ended else (),
            history=history,
            dropped=dropped,
        )

    def _changes(
        self,
        device: Device,
        outcome: Outcome,
        now: datetime,
        cause: RawHit | None,
    ) -> list[Message]:
        """The messages a step publishes, before anything is committed."""
        step, new = outcome.step, outcome.step.phone
        out = [
            self._call_ended(device, rec, cause, now, receipt)
            for rec, receipt in zip(step.ended, outcome.receipts, strict=True)
        ]
        if outcome.call_due:
            out.append(self.out.call(device.id, new, now))
        if step.ended:
            out.append(self.out.history(device.id, outcome.history))
        if outcome.status_due:
            out.append(self.out.status(device.id, new))
        if outcome.online and device.online is not True:
            out.append(self.out.availability(device.id, True))
        return out

    def _history_after(
        self, device: Device, step: Transition
    ) -> tuple[tuple[CallRecord, ...], tuple[CallRecord, ...]]:
        """The phone's history once `step` is committed, newest first, and the records it drops."""
        records = (*reversed(step.ended), *device.history)
        size = self.config.calls.history_size
        return records[:size], records[size:]

    def _call_ended(
        self, device: Device, rec: CallRecord, cause: RawHit | None, now: datetime, receipt: str | None
    ) -> Message:
        """A `call_ended` event; its receipt tells the store once the broker has it."""
        payload = payloads.call_ended(
            rec, device.phone.phone_type, device.mac_resolved, now, cause, self.out.record
        )
        return replace(self.out.event(rec.device, payload), receipt=receipt)

    def _store(
        self,
        device: Device,
        outcome: Outcome,
        moved_from: str | None = None,
        force: bool = False,
    ) -> None:
        """Write what a step changed, before it is published: a hit answered 200 survives a kill.
        Only last_seen changing is written at most once a minute. What is written is the device
        as `_commit` will leave it."""
        step = outcome.step
        if not (force or step.ended or outcome.call_changed or outcome.status_due):
            return
        stored = device.stored(step.phone, outcome.online, outcome.call_updated)
        try:
            self.keeper.save_step(stored, step.ended, outcome.receipts, moved_from)
        except sqlite3.Error as err:
            raise Refused(503, f"{STORE_REFUSAL} ({err}); try again") from err

    def _commit(self, device: Device, outcome: Outcome, now: datetime) -> None:
        step = outcome.step
        if outcome.status_due:
            device.status_published = now
        device.online, device.call_updated = outcome.online, outcome.call_updated
        if step.ended:
            self.out.forget(outcome.dropped)
            device.history.extendleft(step.ended)  # its maxlen drops the same ones
        device.phone = step.phone
        if self.listeners:
            self.notify(DeviceChanged(device.id, step.ended))

    def _status_due(self, device: Device, new: Phone, now: datetime) -> bool:
        old = device.phone
        if device.status_published is None:
            return new.last_seen is not None
        if old is not new and status_view(old) != status_view(new):
            return True
        return new.last_seen is not None and now - device.status_published >= LAST_SEEN_REFRESH

    def notify(self, event: UiEvent) -> None:
        for listener in self.listeners:
            try:
                listener(event)
            except Exception:
                log.exception("a listener failed on %s", type(event).__name__)

    # ---- timers ---------------------------------------------------------------------------------

    def tick(self) -> None:
        """End calls whose end was never reported; phones silent too long go offline."""
        now = self.clock()
        calls = self.config.calls
        # No call has been quiet this long yet: most phones of a busy site, on most ticks.
        patience = timedelta(seconds=min(calls.ring_timeout, calls.stale_timeout))
        # Both scans walk every phone, on the loop: with 10,000 phones the tick took 16 ms a
        # second in the running bridge. The one for silent phones runs only as often as
        # offline_after needs (`Presence`); the one for overdue calls looks at calls only.
        self.presence.tick(now)
        quiet_since = now - patience
        overdue = [
            device
            for device in self.devices.values()
            if device.phone.calls and any(call.updated < quiet_since for call in device.phone.calls)
        ]
        for device in overdue:
            step = expire(device.phone, now, calls.ring_timeout, calls.stale_timeout)
            if step.phone is not device.phone:
                self._take_own_step(device, step, now)  # on storage trouble, again next tick

    async def run_timers(self, interval: float = 1.0) -> None:
        polling = asyncio.create_task(self.poller.run())
        try:
            await self._timers(interval)
        finally:
            polling.cancel()

    async def _timers(self, interval: float) -> None:
        loop = asyncio.get_running_loop()
        next_contacts = next_retention = next_checkpoint = loop.time()
        while True:
            await asyncio.sleep(interval)
            try:
                self.tick()
                self.collector.tick()
                if loop.time() >= next_contacts:
                    next_contacts = loop.time() + CONTACTS_REFRESH
                    await asyncio.to_thread(self.contacts.refresh)
                if self.store is not None and loop.time() >= next_checkpoint:
                    next_checkpoint = loop.time() + CHECKPOINT_EVERY
                    await self.keeper.checkpoint()
                if loop.time() >= next_retention and self.store is not None:
                    next_retention = loop.time() + RETENTION_EVERY.total_seconds()
                    before = self.clock() - timedelta(days=self.config.calls.keep_days)
                    pruned = await asyncio.to_thread(self.store.prune, before)
                    if pruned:
                        log.info(
                            "call log: %d records older than %d days removed",
                            pruned,
                            self.config.calls.keep_days,
                        )
            except Exception:
                log.exception("timer step failed")

    # ---- polls ----------------------------------------------------------------------------------

    def poll_targets(self) -> Turns:
        """The phones known now; each one's target is worked out when its turn in the round comes."""
        return Turns(list(self.devices), self._target_of)

    def _target_of(self, device_id: str) -> PollTarget | None:
        device = self.devices.get(device_id)
        return None if device is None else poll_target(self.config, self.profiles, device.phone)

    def on_poll_result(self, result: PollResult) -> None:
        """Availability from reachability; calls and lines the phone's status contradicts, corrected."""
        device = self.devices.get(result.device)
        if device is None:
            return  # removed while it was polled
        now = self.clock()
        if result.reason:
            log.debug("poll of %s: %s", device.id, result.reason)
        online = self.presence.poll(device, result.reachable, now)
        if online is not None and online != device.online:
            self.set_online(device, online, "it answers polls" if online else "it does not answer polls")
        fixed = reconcile(device.phone, result, now)
        if fixed.phone is device.phone:
            return
        resync: list[Message] = []
        if fixed.corrections:
            payload = resync_payload(
                device.id, device.phone.phone_type, list(fixed.corrections), now, device.mac_resolved
            )
            resync.append(self.out.event(device.id, payload))
            log.info("%s resynced: %s", device.id, "; ".join(fixed.corrections))
        self._take_own_step(device, fixed.transition, now, resync, force=True)  # else the next poll

    def _take_own_step(
        self,
        device: Device,
        step: Transition,
        now: datetime,
        also: Sequence[Message] = (),
        force: bool = False,
    ) -> None:
        """A step the bridge takes itself (a call timed out, a poll's corrections): its messages,
        then `also`, stored, published past the queue's bound, and committed; nothing of it when
        the store refuses (the caller tries again later)."""
        outcome = self._outcome(device, step, now, online=False)
        messages = [*self._changes(device, outcome, now, None), *also]
        try:
            self._store(device, outcome, force=force)
        except Refused:
            return
        self.publish_forced(messages)
        self._commit(device, outcome, now)

    def set_online(self, device: Device, online: bool, why: str, *, quiet: bool = False) -> None:
        device.online = online
        log.log(
            logging.DEBUG if quiet else logging.INFO,
            "phone %s is %s: %s", device.id, "online" if online else "offline", why,
        )  # fmt: skip
        self.publish_forced([self.out.availability(device.id, online)])
        self.keeper.save(device)  # when it cannot, the phone's next stored step has it
        self.notify(DeviceChanged(device.id))

    # ---- MQTT -----------------------------------------------------------------------------------

    def on_connected(self) -> None:
        """(Re)state everything retained: the broker may have lost it."""
        self.notify(HealthChanged("mqtt"))
        self.publish_forced(
            [
                self.out.state(True),
                self.out.bridge(BridgeTopic.INFO, self._info(), retain=True),
                self.device_list.message(),
            ]
        )
        self._restate("retained", self._retained)
        self._restate("discovery", self.discovery.all)  # after the retained topics it points to

    def _retained(self, devices: list[Device]) -> list[Message]:
        now = self.clock()
        return [message for device in devices for message in self.out.restate(device, now, keep=False)]

    def _restate(self, what: str, build: Callable[[list[Device]], list[Message]]) -> None:
        """Publish `build` of every phone, a batch of phones at a time (RESTATE_BATCH), each batch
        built once the queue is down to RESTATE_LOW, so that hits keep finding room. A restatement
        of the same kind still under way is dropped: this one shows everything."""
        if self.link is None:
            return
        running = self._restating.pop(what, None)
        if running is not None:
            running.cancel()
        link, ids = self.link, list(self.devices)
        waiting_for = self._restating.get("retained")  # discovery points at the retained topics

        async def run() -> None:
            if waiting_for is not None and what != "retained":
                await asyncio.wait({waiting_for})
            for start in range(0, len(ids), RESTATE_BATCH):
                await link.drained_to(RESTATE_LOW)
                batch = [self.devices[i] for i in ids[start : start + RESTATE_BATCH] if i in self.devices]
                self.publish_forced(build(batch))

        def finished(task: asyncio.Task[None]) -> None:
            if self._restating.get(what) is task:
                del self._restating[what]

        task = asyncio.get_running_loop().create_task(run())
        self._restating[what] = task
        task.add_done_callback(finished)

    def stop_restating(self) -> None:
        """At shutdown: the next start restates everything anyway."""
        for task in self._restating.values():
            task.cancel()
        self._restating.clear()

    def on_message(self, inbound: Inbound) -> None:
        """A message on a subscribed topic: a device command, a bridge request, HA's birth."""
        if inbound.topic == self.discovery.status_topic:
            self.discovery.on_status(inbound.payload, lambda: self._restate("discovery", self.discovery.all))
            return
        target = self.topics.parse(inbound.topic)
        if target is None:
            log.debug("MQTT message on %s ignored", inbound.topic)
            return
        if inbound.retain:
            # A retained command would replay on every restart: never act on one.
            log.warning("ignored a retained message on %s: commands must not be retained", inbound.topic)
            return
        if target.device is None:
            self.requests.answer(target.leaf, inbound.payload)
        else:
            self.control.submit(target.device, target.leaf, inbound.payload)

    def publish_log(self, payload: dict[str, object]) -> None:
        """One warning or error on `bridge/log`; dropped, not forced, when the queue is full."""
        if self.link is not None:
            self.link.publish([self.out.bridge(BridgeTopic.LOG, payload, retain=False)])

    def publish_forced(self, messages: list[Message]) -> None:
        if self.link is not None and messages:
            self.link.publish(messages, force=True)

    def phone_of(self, device_id: str) -> Phone | None:
        device = self.devices.get(device_id)
        return device.phone if device is not None else None

    def respond(self, device_id: str, response: Response) -> None:
        self.metrics.count_phone_command(str(response.get("status")))
        self.publish_forced([self.out.device(device_id, DeviceTopic.RESPONSE, response, retain=False)])

    def call_log(self, query: CallQuery) -> list[CallRecord]:
        """Call records, newest first: from the store, else the phones' recent histories."""
        if self.store is not None:
            return self.keeper.read(lambda store: store.calls(query))
        records = (
            rec
            for device in self.devices.values()
            if query.device is None or device.id == query.device
            for rec in device.history
            if (query.result is None or rec.result == query.result)
            and (query.since is None or rec.ended >= query.since)
        )
        ordered = sorted(records, key=lambda rec: rec.ended, reverse=True)
        return ordered[query.offset : query.offset + query.limit]

    def offline_message(self) -> Message:
        return self.out.state(False)

    def refused(
        self, status: int, reason: str, source: str | None, method: str, path: str, query: str = ""
    ) -> None:
        log.warning("refused %s %s %s from %s: %s", status, method, path, source, reason)
        self.metrics.count_refusal(status, reason)
        if self.listeners:
            self.notify(HitSeen(self.clock(), method, path, query, source, status, reason, None))
        if self.link is None or status == 503:
            return
        data = {"status": status, "reason": reason, "source": source, "method": method, "path": path}
        self.link.publish([self.out.bridge_event("request_refused", data)])

    def health(self) -> dict[str, object]:
        link = self.link
        storage_error = self.keeper.health.error
        return {
            "status": "ok" if storage_error is None else "degraded",
            "storage_error": storage_error,
            "mqtt_connected": bool(link and link.connected),
            "queue_length": link.queue_length if link else 0,
            "uptime_seconds": round((self.clock() - self.started).total_seconds(), 3),
            "devices": len(self.devices),
        }

    def problems(self) -> list[str]:
        """What keeps the bridge from doing all of its job now, in words, for the status page."""
        found = []
        link = self.link
        if link is not None and not link.connected:
            found.append(
                f"Not connected to the MQTT broker ({link.settings.host}:{link.settings.port}): "
                "hits are still answered, and their messages wait in the queue until it is back."
            )
        if self.keeper.health.error is not None:
            found.append(
                f"The store cannot write ({self.keeper.health.error}): hits that change a phone are "
                "refused with 503 until it can."
            )
        return found

    def http_url(self) -> str:
        """`http_url(config.http)`, looked up at most once every HTTP_URL_FOR: with no public_url
        it asks the resolver for this host's address, on the loop, and every phone's discovery
        carries it (Home Assistant's birth message republishes all of them at once)."""
        now = time.monotonic()
        if self._http_url is None or now - self._http_url[1] >= HTTP_URL_FOR:
            self._http_url = (http_url(self.config.http), now)
        return self._http_url[0]

    def _info(self) -> dict[str, object]:
        return {
            "version": __version__,
            "base_topic": self.config.mqtt.base_topic,
            "http_url": self.http_url(),
            "phone_types": sorted(self.profiles),
            "config": self.config.public_dict(),
        }

    def broker_settings(self, endpoint: Endpoint) -> BrokerSettings:
        mqtt = self.config.mqtt
        return BrokerSettings(
            host=endpoint.host,
            port=endpoint.port,
            client_id=mqtt.client_id or f"amego-bridge-{socket.gethostname()}",
            will=self.offline_message(),
            queue_size=mqtt.queue_size,
            subscriptions=(*self.topics.subscriptions(), *self.discovery.subscriptions()),
            username=endpoint.username or mqtt.username or None,
            password=endpoint.password or mqtt.password or None,
            tls=endpoint.tls,
            protocol=endpoint.protocol,
            keepalive=mqtt.keepalive,
        )
