"""The status page: phones and their live calls, the call log, the debug log of raw hits, set-up URLs.

Server-rendered with Jinja2; one server-sent event stream (`/api/events`) keeps open pages current.
The fragments it sends are rendered by the same template macros as the pages.
"""

import asyncio
import base64
import binascii
import hmac
import json
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from types import FrameType
from typing import Any

import jinja2
import uvicorn
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from bridge import __version__, payloads
from bridge.calls import CallRecord, CallResult
from bridge.feed import (
    CLOSE,
    DeviceChanged,
    Fanout,
    HealthChanged,
    HitLog,
    HitSeen,
    LoggedHit,
    UiEvent,
    frame,
)
from bridge.metrics import CALL_LOG_REFUSAL
from bridge.service import Bridge
from bridge.store import CallQuery
from bridge.webviews import (
    QueryError,
    calls_csv,
    device_json,
    duration,
    hit_device,
    parse_call_query,
    setup_view,
)

WEB = Path(__file__).parent / "web"
HIT_LOG_SIZE = 500
RECENT_CALLS = 20
HEARTBEAT = 15.0  # seconds between keep-alive comments on an idle event stream
REALM = 'Basic realm="amego-bridge", charset="UTF-8"'

Handler = Callable[[Request], Awaitable[Response]]


def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(WEB / "templates"),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["iso"] = payloads.iso
    env.filters["duration"] = duration
    env.globals["version"] = __version__
    return env


def password_given(request: Request, password: str) -> bool:
    """Whether the request carries HTTP Basic credentials with `password` (any user name)."""
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return False
    given = decoded.partition(":")[2]
    return hmac.compare_digest(given.encode(), password.encode())


class StatusPage:
    """The pages and their API. Registers itself as a listener of the bridge."""

    def __init__(self, bridge: Bridge, log_size: int = HIT_LOG_SIZE) -> None:
        self.bridge = bridge
        self.password = bridge.config.http.ui_password
        self.hits = HitLog(log_size)
        self.fanout = Fanout()
        self.env = environment()
        self.templates = Jinja2Templates(env=self.env)
        # The fragments both pages and events show; Jinja makes the macros attributes at run time.
        self.parts: Any = self.env.get_template("parts.html").module
        self.loop: asyncio.AbstractEventLoop | None = None  # the server's, once a stream opened
        bridge.listeners.append(self.observe)

    # ---- the bridge's events --------------------------------------------------------------------

    def observe(self, event: UiEvent) -> None:
        if isinstance(event, HitSeen):
            entry = self.hits.add(event)
            if self.fanout:
                self.fanout.publish(self.hit_frame(entry))
        elif isinstance(event, DeviceChanged) and self.fanout:
            self.fanout.publish(self.device_frame(event.device))
            if event.ended:
                self.fanout.publish(self.recent_frame())
        elif isinstance(event, HealthChanged) and self.fanout:
            self.fanout.publish(self.health_frame())

    def hit_frame(self, entry: LoggedHit) -> str:
        hit, device = entry.hit, hit_device(entry.hit)
        data = {
            "seq": entry.seq,
            "time": payloads.iso(hit.time),
            "method": hit.method,
            "path": hit.path,
            "query": hit.query,
            "source": hit.source,
            "status": hit.status,
            "reason": hit.reason,
            "device": device,
            "html": str(self.parts.hit_row(entry, device)),
        }
        return frame("hit", json.dumps(data), entry.seq)

    def device_frame(self, device_id: str) -> str:
        device = self.bridge.devices.get(device_id)
        if device is None:
            return frame("removed", json.dumps({"id": device_id}))
        now = self.bridge.clock()
        data = {
            "id": device_id,
            "now": payloads.iso(now),
            "device": device_json(device, now),
            "html": str(self.parts.phone_card(device, now)),
        }
        return frame("device", json.dumps(data))

    def health_frame(self) -> str:
        return frame("health", json.dumps({"html": str(self.parts.health(self.bridge.problems()))}))

    def recent_frame(self) -> str:
        rows = self.parts.call_rows(self.recent_calls(), self.names())
        return frame("calls", json.dumps({"html": str(rows)}))

    # ---- queries ---------------------------------------------------------------------------------

    def recent_calls(self) -> list[CallRecord]:
        """The last calls, for the status page and its live updates: none when the call log cannot
        be read, so that the rest of the page still shows."""
        try:
            return find_calls(self.bridge, CallQuery(limit=RECENT_CALLS))
        except HTTPException:
            return []

    def names(self) -> dict[str, str]:
        return {d.id: d.name or d.id for d in self.bridge.devices.values()}

    # ---- routes ---------------------------------------------------------------------------------

    def routes(self) -> list[BaseRoute]:
        """The UI and API routes. They go before the Action URL route: `/setup/<type>` and
        `/api/<name>` have its two-segment shape, so `setup` and `api` cannot be event names."""
        guard = self.guarded
        return [
            Route("/", guard(self.index), methods=["GET"]),
            Route("/debug", guard(self.debug), methods=["GET"]),
            Route("/calls", guard(self.calls), methods=["GET"]),
            Route("/setup", guard(self.setup), methods=["GET"]),
            Route("/setup/{phone_type}", guard(self.setup), methods=["GET"]),
            Route("/api/devices", guard(self.api_devices), methods=["GET"]),
            Route("/api/calls", guard(self.api_calls), methods=["GET"]),
            Route("/api/events", guard(self.api_events), methods=["GET"]),
            Route("/api/{rest:path}", guard(self.api_unknown)),
            Mount("/static", StaticFiles(directory=WEB / "static"), name="static"),
        ]

    def guarded(self, handler: Handler) -> Handler:
        """`handler` behind `http.ui_password`, when one is set."""
        if not self.password:
            return handler

        async def check(request: Request) -> Response:
            if not password_given(request, self.password):
                return PlainTextResponse(
                    "this page needs the password (http.ui_password)\n",
                    401,
                    headers={"WWW-Authenticate": REALM},
                )
            return await handler(request)

        return check

    def page(self, request: Request, name: str, status: int = 200, **context: object) -> Response:
        context.update(
            active=name.removesuffix(".html"),
            now=self.bridge.clock(),
            seq=self.hits.seq,
            problems=self.bridge.problems(),
        )
        return self.templates.TemplateResponse(
            request, name, context, status_code=status, headers={"Cache-Control": "no-store"}
        )

    async def index(self, request: Request) -> Response:
        return self.page(
            request,
            "index.html",
            devices=list(self.bridge.devices.values()),
            recent=self.recent_calls(),
            names=self.names(),
        )

    async def debug(self, request: Request) -> Response:
        entries = [(e, hit_device(e.hit)) for e in self.hits.newest()]
        return self.page(
            request,
            "debug.html",
            entries=entries,
            devices=list(self.bridge.devices.values()),
            size=self.hits.entries.maxlen,
        )

    async def calls(self, request: Request) -> Response:
        try:
            query = parse_call_query(request.query_params)
            error = ""
        except QueryError as err:
            query, error = CallQuery(), str(err)
        return self.page(
            request,
            "calls.html",
            status=400 if error else 200,
            query=query,
            error=error,
            records=find_calls(self.bridge, query),
            names=self.names(),
            results=list(CallResult),
            csv_query=str(request.query_params),
            history_size=self.bridge.config.calls.history_size,
        )

    async def setup(self, request: Request) -> Response:
        profiles = self.bridge.profiles
        wanted = request.path_params.get("phone_type")
        profile = profiles.get(wanted.lower()) if wanted else None
        view = setup_view(profile, self.bridge.http_url(), self.bridge.config.http.token) if profile else None
        return self.page(
            request,
            "setup.html",
            status=404 if wanted and profile is None else 200,
            profiles=sorted(profiles.values(), key=lambda p: p.name),
            wanted=wanted,
            view=view,
            server=self.bridge.http_url(),
        )

    async def api_devices(self, request: Request) -> Response:
        now = self.bridge.clock()
        return JSONResponse([device_json(d, now) for d in self.bridge.devices.values()])

    async def api_calls(self, request: Request) -> Response:
        try:
            query = parse_call_query(request.query_params)
        except QueryError as err:
            return JSONResponse({"error": str(err)}, 400)
        records = find_calls(self.bridge, query)
        if request.query_params.get("format", "json").lower() == "csv":
            return Response(
                calls_csv(records, self.names()),
                media_type="text/csv; charset=utf-8",
                headers={"Content-Disposition": 'attachment; filename="calls.csv"'},
            )
        return JSONResponse(payloads.history(records))

    async def api_unknown(self, request: Request) -> Response:
        return JSONResponse({"error": f"no API route {request.url.path}"}, 404)

    async def api_events(self, request: Request) -> Response:
        # A reconnecting browser says where it stopped; a fresh page says what it already shows.
        mark = request.headers.get("last-event-id") or request.query_params.get("after") or "0"
        after = int(mark) if mark.isdigit() else 0
        return StreamingResponse(
            self.stream(after),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    async def stream(self, after: int) -> AsyncIterator[str]:
        # Subscribe and take the snapshot with no await between, so no change falls in a gap and
        # none that is queued is older than the snapshot.
        self.loop = asyncio.get_running_loop()
        queue = self.fanout.subscribe()
        if after > self.hits.seq:
            after = 0  # the bridge restarted since the page was loaded
        snapshot = [
            "retry: 2000\n\n",
            *(self.hit_frame(entry) for entry in list(self.hits.after(after))),
            *(self.device_frame(device_id) for device_id in list(self.bridge.devices)),
            self.recent_frame(),
            self.health_frame(),
        ]
        try:
            for item in snapshot:
                yield item
            while True:
                try:
                    item = await asyncio.wait_for(queue.get(), HEARTBEAT)
                except TimeoutError:
                    yield ": keep-alive\n\n"
                    continue
                if item == CLOSE:
                    return
                yield item
        finally:
            self.fanout.unsubscribe(queue)

    def stop_streams(self) -> None:
        """End every open event stream (uvicorn waits for them before it stops). Safe from a
        signal handler or another thread."""
        self.fanout.closed = True  # for a stream that is opening right now
        if self.loop is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.fanout.close_all)


class Server(uvicorn.Server):
    """uvicorn's server, ending the status page's event streams as soon as it is told to stop:
    it waits for every response to finish, and an event stream never does by itself."""

    def __init__(self, config: uvicorn.Config, page: StatusPage) -> None:
        super().__init__(config)
        self.page = page

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.page.stop_streams()
        super().handle_exit(sig, frame)


def find_calls(bridge: Bridge, query: CallQuery) -> list[CallRecord]:
    """The call log, newest first, from the bridge's store: 503 with the reason when it cannot be
    read (a store damaged again within the hour of its start over)."""
    try:
        return bridge.call_log(query)
    except sqlite3.Error as err:
        raise HTTPException(503, f"{CALL_LOG_REFUSAL} ({err}); try again") from err
