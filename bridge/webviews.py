"""What the status page shows, as plain values: device JSON, call-log filters and CSV, set-up URLs.

Pure: no HTTP, no templates, no clock.
"""

import csv
import io
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import parse_qsl, quote, urlsplit

from bridge import payloads
from bridge.calls import CallRecord, CallResult
from bridge.config import normalise_device_id
from bridge.events import format_mac, parse_mac
from bridge.feed import HitSeen
from bridge.profiles import Profile
from bridge.registry import Device
from bridge.store import CallQuery

DEFAULT_LIMIT = CallQuery().limit
MAX_LIMIT = 10_000


def device_json(device: Device, now: datetime) -> dict[str, object]:
    """A phone as `/api/devices` shows it: its registry entry, status and call state."""
    phone = device.phone
    return {
        "id": device.id,
        "mac": format_mac(device.mac) if device.mac else None,
        "name": device.name or device.id,
        "configured": device.configured,
        "first_seen": payloads.iso(device.first_seen),
        "online": device.online,
        "status": payloads.status(phone),
        "call": payloads.call_state(phone, device.call_updated or now),
    }


def duration(seconds: float) -> str:
    """`0:07`, `12:34`, `1:02:03`."""
    total = max(0, int(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def hit_device(hit: HitSeen) -> str | None:
    """The phone a hit is about: the bridge's id, else the MAC a refused hit named in its query."""
    if hit.device is not None:
        return hit.device
    for name, value in parse_qsl(hit.query):
        if name.lower() in ("device", "mac") and (mac := parse_mac(value)):
            return mac
    return None


# ---- the call log -------------------------------------------------------------------------------


class QueryError(ValueError):
    """A call-log filter that cannot be read; the message names it."""


def parse_call_query(params: Mapping[str, str]) -> CallQuery:
    """`device` (an id, or a MAC in any spelling), `result`, `since` (ISO date or time; UTC when
    no offset is given), `limit`. Empty values mean no filter."""
    device = params.get("device", "").strip() or None
    if device is not None:
        device = normalise_device_id(device)
        if device is None:
            raise QueryError("device: not a device id or MAC")
    raw_result = params.get("result", "").strip().lower()
    result = None
    if raw_result:
        try:
            result = CallResult(raw_result)
        except ValueError as err:
            raise QueryError(f"result: one of {', '.join(r.value for r in CallResult)}") from err
    raw_since = params.get("since", "").strip()
    since = None
    if raw_since:
        try:
            since = datetime.fromisoformat(raw_since)
        except ValueError as err:
            raise QueryError("since: an ISO 8601 date or time, e.g. 2026-11-26 or 2026-11-26T08:00") from err
        if since.tzinfo is None:
            since = since.replace(tzinfo=UTC)
    raw_limit = params.get("limit", "").strip()
    limit = DEFAULT_LIMIT
    if raw_limit:
        if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= MAX_LIMIT:
            raise QueryError(f"limit: a whole number from 1 to {MAX_LIMIT}")
        limit = int(raw_limit)
    return CallQuery(device=device, result=result, since=since, limit=limit)


CSV_COLUMNS = ("started", "answered", "ended", "device", "phone", "direction", "number", "name", "line",
               "result", "ring_seconds", "talk_seconds", "call_id")  # fmt: skip
_NUMBER = re.compile(r"\+?[0-9*#]+")


def cell(value: object) -> str:
    """A CSV cell a spreadsheet shows as text: no value from a phone may start a formula."""
    if value is None:
        return ""
    text = str(value)
    if text[:1] in ("=", "+", "-", "@", "\t", "\r") and not _NUMBER.fullmatch(text):
        return "'" + text
    return text


def calls_csv(records: Iterable[CallRecord], names: Mapping[str, str]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for rec in records:
        row = payloads.record(rec) | {"phone": names.get(rec.device, rec.device)}
        writer.writerow([cell(row[column]) for column in CSV_COLUMNS])
    return out.getvalue()


# ---- set-up -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SetupUrl:
    event: str
    setting: str
    url: str


@dataclass(frozen=True, slots=True)
class SetupView:
    profile: Profile
    urls: tuple[SetupUrl, ...]
    lines: tuple[str, ...]  # provisioning lines: each setting with its URL, then the profile's own
    steps: tuple[str, ...]
    control_steps: tuple[str, ...]  # remote control (dial, commands): what to set on the phone
    token: bool  # the URLs carry http.token


def setup_view(profile: Profile, server: str, token: str) -> SetupView:
    """The URLs to paste into a phone of this profile, `$server` (and the token) filled in."""
    suffix = f"&token={quote(token, safe='')}" if token else ""
    urls = tuple(
        SetupUrl(u.event, u.setting, f"{server}/{u.event}/{profile.name}?{u.query}{suffix}")
        for u in profile.event_urls
    )
    bridge_ip = urlsplit(server).hostname or server
    commands = profile.commands
    own_lines = tuple(line.replace("{bridge_ip}", bridge_ip) for line in commands.setup_lines)
    return SetupView(
        profile=profile,
        urls=urls,
        lines=(*(f"{u.setting}{profile.setting_separator}{u.url}" for u in urls), *own_lines),
        steps=profile.setup_steps,
        control_steps=tuple(step.replace("{bridge_ip}", bridge_ip) for step in commands.setup_steps),
        token=bool(token),
    )
