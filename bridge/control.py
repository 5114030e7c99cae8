"""Dials and commands from MQTT to phones: one at a time per phone, in order, each one answered.

Runs on the asyncio loop's thread, like the rest of the service: a bounded queue per phone and
one worker task while that queue has work. Every dial and command ends in exactly one response.
"""

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Mapping

from bridge import phone
from bridge.calls import Phone
from bridge.commands import (
    Command,
    CommandRefused,
    PhoneCommand,
    build_request,
    call_id_for,
    parse_command,
    parse_dial,
)
from bridge.config import Config
from bridge.phone import Outcome
from bridge.profiles import Profile

log = logging.getLogger(__name__)

Response = dict[str, object]
Publish = Callable[[str, Response], None]  # (device id, response)


def response(command: str | None, outcome: Outcome, transaction: str | int | None) -> Response:
    return {
        "command": command,
        "status": "ok" if outcome.ok else "error",
        "error": outcome.error,
        "http_status": outcome.http_status,
        "transaction": transaction,
    }


class PhoneControl:
    def __init__(
        self,
        config: Config,
        profiles: Mapping[str, Profile],
        phone_of: Callable[[str], Phone | None],
        publish: Publish,
    ) -> None:
        self.config = config
        self.profiles = profiles
        self.phone_of = phone_of  # a device's current state, None when the bridge does not know it
        self.publish = publish
        self.queues: dict[str, deque[PhoneCommand]] = {}
        self.workers: dict[str, asyncio.Task[None]] = {}

    def submit(self, device: str, leaf: str, payload: bytes) -> None:
        """A message on `<base>/<device>/dial` or `.../command`: queue it, or answer it at once."""
        try:
            command = parse_dial(payload) if leaf == "dial" else parse_command(payload)
        except CommandRefused as err:
            self.refuse(device, err.command, err.reason, err.transaction)
            return
        if self.phone_of(device) is None:
            self.refuse(device, command.command, f"unknown device {device!r}", command.transaction)
            return
        queue = self.queues.setdefault(device, deque())
        limit = self.config.control.queue_size
        if len(queue) >= limit:
            reason = f"busy: {limit} commands for this phone are already queued or being sent; try again"
            self.refuse(device, command.command, reason, command.transaction)
            return
        queue.append(command)
        if device not in self.workers:
            self.workers[device] = asyncio.get_running_loop().create_task(self.work(device))

    def refuse(self, device: str, command: str | None, reason: str, transaction: str | int | None) -> None:
        log.warning("%s for %s refused: %s", command or "command", device, reason)
        self.publish(device, response(command, Outcome(reason), transaction))

    async def work(self, device: str) -> None:
        queue = self.queues[device]
        while queue:
            command = queue[0]  # it stays in the queue, and counts against its bound, until answered
            try:
                outcome = await self.execute(device, command)
            except Exception:
                log.exception("%s for %s failed", command.command, device)
                outcome = Outcome("internal error in the bridge; see its log")
            self.publish(device, response(command.command, outcome, command.transaction))
            queue.popleft()
        # No await since the queue was found empty: nothing can have been queued meanwhile.
        del self.workers[device]
        del self.queues[device]

    async def execute(self, device: str, command: PhoneCommand) -> Outcome:
        state = self.phone_of(device)
        if state is None:
            return Outcome(f"unknown device {device!r}")
        reached = phone.reach(self.config, self.profiles, state)
        dc, phone_type, commands, target = (
            reached.device,
            reached.phone_type,
            reached.commands,
            reached.target,
        )
        if target is None:
            return Outcome(
                f"no address known for {device}: set [devices.{device}] ip, or let the phone send "
                "an Action URL first (from an address in http.allowed_networks)"
            )
        if command.command is Command.DIAL and command.line is None and dc.line:
            command = PhoneCommand(command.command, command.number, dc.line, transaction=command.transaction)
        try:
            request = build_request(
                command,
                phone_type,
                commands,
                call_id_for(command.command, state),
                target.username,
                target.password,
            )
        except CommandRefused as err:
            return Outcome(err.reason)
        outcome = await phone.send(target, request, commands)
        if outcome.ok:
            log.info("%s on %s (%s %s): ok", command.command, device, phone_type, request.path)
        else:
            log.warning(
                "%s on %s (%s %s): %s", command.command, device, phone_type, request.path, outcome.error
            )
        return outcome
