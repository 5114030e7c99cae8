"""Starlette routes. The lifespan owns the MQTT link and the timers."""

import asyncio
import contextlib
import hmac
import ipaddress
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING
from urllib.parse import unquote

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from bridge import phone
from bridge.events import BadHit, RawHit, normalise_event, parse_hit
from bridge.httpserver import with_deadline
from bridge.logfeed import MqttLogHandler
from bridge.mqtt import BrokerSettings, MqttLink
from bridge.profiles import profile_for
from bridge.service import Bridge, Refused
from bridge.webui import StatusPage

if TYPE_CHECKING:
    from bridge.broker import EmbeddedBroker

log = logging.getLogger(__name__)

MAX_URL = 4096
MAX_PARAMS = 100
MAX_BODY = 64 * 1024
FORM = "application/x-www-form-urlencoded"

_BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
_TOKEN_VALUE = re.compile(r"(^|&)(token=)[^&]*", re.IGNORECASE)


def mask_token(query: str) -> str:
    if "token=" not in query.lower():  # most queries: a cheaper test than the regex
        return query
    return _TOKEN_VALUE.sub(r"\1\2***", query)


def shown_query(scope: Scope) -> str:
    """A request's query for the debug log: token masked, cut to 1000 characters."""
    return mask_token(scope.get("query_string", b"").decode("utf-8", "replace"))[:1000]


def decode_params(raw: bytes) -> list[tuple[str, str]]:
    """Parameters of a query string or form body; Refused(400/413) when malformed or too many."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise Refused(400, "request is not valid UTF-8") from err
    if _BAD_PERCENT.search(text):
        raise Refused(400, "invalid percent-encoding")
    if text.count("&") + 1 > MAX_PARAMS and len([p for p in text.split("&") if p]) > MAX_PARAMS:
        raise Refused(413, f"more than {MAX_PARAMS} parameters")
    try:
        if "%" not in text and "+" not in text:  # nothing to decode: most hits' queries
            return [part.partition("=")[::2] for part in text.split("&") if part]
        return [
            (_unquote(name), _unquote(value))
            for name, _, value in (part.partition("=") for part in text.split("&") if part)
        ]
    except (UnicodeDecodeError, ValueError) as err:
        raise Refused(400, "invalid percent-encoding or UTF-8") from err


def _unquote(text: str) -> str:
    """A query's name or value decoded as `parse_qsl` does it, with its cost only where there is
    something to decode (the names and most values of a hit have nothing)."""
    if "+" in text:
        text = text.replace("+", " ")
    return unquote(text, errors="strict") if "%" in text else text


class RateLimit:
    """A token bucket per source address."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.buckets: dict[str, tuple[float, float]] = {}

    def allow(self, source: str) -> bool:
        if self.rate <= 0:
            return True
        now = time.monotonic()
        burst = max(1.0, self.rate)
        tokens, last = self.buckets.get(source, (burst, now))
        tokens = min(burst, tokens + (now - last) * self.rate)
        if len(self.buckets) > 10_000:
            self.buckets.clear()
        if tokens < 1.0:
            self.buckets[source] = (tokens, now)
            return False
        self.buckets[source] = (tokens - 1.0, now)
        return True


class Guard:
    """Checks that apply to every route: source network and URL length."""

    def __init__(self, app: ASGIApp, bridge: Bridge) -> None:
        self.app = app
        self.bridge = bridge
        self.networks = bridge.config.http.allowed_networks
        self.verdicts: dict[str, bool] = {}  # by source address: parsing one costs more than a hit's routing

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        source = scope["client"][0] if scope.get("client") else None
        status, reason = 0, ""
        if not self._allowed(source):
            status, reason = 403, "source address not in http.allowed_networks"
        elif len(scope.get("raw_path", b"")) + len(scope.get("query_string", b"")) + 1 > MAX_URL:
            status, reason = 414, f"URL longer than {MAX_URL} bytes"
        if status:
            self.bridge.refused(
                status, reason, source, scope["method"], scope["path"][:200], shown_query(scope)
            )
            await PlainTextResponse(reason + "\n", status)(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _allowed(self, source: str | None) -> bool:
        if source is None:
            return False
        known = self.verdicts.get(source)
        if known is None:
            if len(self.verdicts) > 10_000:
                self.verdicts.clear()
            known = self.verdicts[source] = self._check(source)
        return known

    def _check(self, source: str) -> bool:
        try:
            address = ipaddress.ip_address(source.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped
        return any(address in net for net in self.networks)


def first_segments(routes: list[BaseRoute]) -> frozenset[str]:
    """The first path segments of these routes: paths that start with one are theirs."""
    return frozenset(
        route.path.strip("/").split("/", 1)[0] for route in routes if isinstance(route, Route | Mount)
    )


def as_url_path(path: str) -> str:
    """A scope's path as Starlette's `request.url.path` gives it: `?`, `#` and `\\` escaped, and tabs
    and line breaks dropped (urlsplit drops them), so no log line is ever broken by a path."""
    path = path.replace("?", "%3F").replace("#", "%23").replace("\\", "%5C")
    if "\t" in path or "\r" in path or "\n" in path:
        path = path.replace("\t", "").replace("\r", "").replace("\n", "")
    return path


Take = Callable[[Scope, str, str, str], Awaitable[tuple[int, str]]]
_OK_HEADERS = [(b"content-length", b"2"), (b"content-type", b"text/plain; charset=utf-8")]


class FastAction:
    """Action URL GETs (`/<event>/<phone_type>`) taken straight from the ASGI scope: Starlette's
    request, routing and exception layers cost more per hit than the bridge's own work. Anything
    else (POST, HEAD, other paths) goes on to the app, so it answers the same either way."""

    def __init__(self, app: ASGIApp, take: Take, reserved: frozenset[str]) -> None:
        self.app = app
        self.take = take
        self.reserved = reserved  # first segments of the routes matched before the Action URL's

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET" and not scope.get("root_path"):
            path: str = scope["path"]
            parts = path.split("/")
            if len(parts) == 3 and not parts[0] and parts[1] and parts[2] and parts[1] not in self.reserved:
                shown = as_url_path(path)
                status, reason = await self.take(scope, parts[1], parts[2], shown)
                if status == 200:
                    await send({"type": "http.response.start", "status": 200, "headers": _OK_HEADERS})
                    await send({"type": "http.response.body", "body": b"OK"})
                else:
                    await PlainTextResponse(reason + "\n", status)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def build_app(
    bridge: Bridge, broker: BrokerSettings | None, embedded: "EmbeddedBroker | None" = None
) -> Starlette:
    """The app; with `broker` None it runs without MQTT (every hit is then refused with 503).

    `embedded`, when given, is started before the MQTT link connects and stopped after it is gone.
    """
    config = bridge.config
    limiter = RateLimit(config.http.rate_limit)
    token = config.http.token

    async def read_body(request: Request) -> bytes:
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > MAX_BODY:
            raise Refused(413, f"body larger than {MAX_BODY} bytes")
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BODY:
                raise Refused(413, f"body larger than {MAX_BODY} bytes")
        return body

    def observe(event_name: str, type_name: str, outcome: str, started: float) -> None:
        profile = profile_for(type_name.lower(), bridge.profiles)
        kind = normalise_event(event_name, profile)[1]
        bridge.metrics.count_hit(kind or "other", profile.name, outcome, time.perf_counter() - started)

    async def take(
        scope: Scope,
        event_name: str,
        type_name: str,
        path: str,
        form: Callable[[], Awaitable[list[tuple[str, str]]]] | None = None,
    ) -> tuple[int, str]:
        """One Action URL hit: (200, "OK"), or a refusal's status and reason, logged and counted."""
        started = time.perf_counter()
        client = scope.get("client")
        source = client[0] if client else None
        method = scope["method"]
        try:
            if not limiter.allow(source or ""):
                raise Refused(429, f"more than {config.http.rate_limit:g} hits per second from {source}")
            raw_query = scope.get("query_string", b"")
            params = decode_params(raw_query)
            if form is not None:
                params += await form()
                if len(params) > MAX_PARAMS:
                    raise Refused(413, f"more than {MAX_PARAMS} parameters")
            if token and not any(
                name.lower() == "token" and hmac.compare_digest(value.encode(), token.encode())
                for name, value in params
            ):
                raise Refused(403, "missing or wrong token")
            phone_type = type_name.lower()
            profile = profile_for(phone_type, bridge.profiles)
            if phone_type not in bridge.profiles:
                phone_type = profile.name
            query = mask_token(raw_query.decode("utf-8"))
            try:
                event = parse_hit(
                    event_name,
                    phone_type,
                    params,
                    profile=profile,
                    source=source,
                    raw=RawHit(method, path, query),
                )
            except BadHit as err:
                raise Refused(400, str(err)) from err
            device_id, resolved = await bridge.identify(event)
            bridge.handle_hit(event, device_id, resolved)
        except Refused as refusal:
            bridge.refused(refusal.status, refusal.reason, source, method, path[:200], shown_query(scope))
            observe(event_name, type_name, str(refusal.status), started)
            return refusal.status, refusal.reason
        kind = event.kind or "other"  # what observe() would find again
        bridge.metrics.count_hit(kind, profile.name, "accepted", time.perf_counter() - started)
        return 200, "OK"

    async def action(request: Request) -> Response:
        async def form() -> list[tuple[str, str]]:
            body = await read_body(request)
            content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
            if body and content_type not in (FORM, ""):
                raise Refused(400, f"body must be {FORM}")
            return decode_params(body)

        status, reason = await take(
            request.scope,
            request.path_params["event"],
            request.path_params["phone_type"],
            request.url.path,
            form if request.method == "POST" else None,
        )
        return PlainTextResponse(reason if status == 200 else reason + "\n", status)

    async def metrics(request: Request) -> Response:
        body, content_type = bridge.metrics.render(request.headers.get("accept", ""))
        return Response(body, headers={"content-type": content_type})

    async def healthz(request: Request) -> Response:
        return JSONResponse(bridge.health())

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        reason = {404: "no such route", 405: "method not allowed"}.get(exc.status_code, str(exc.detail))
        source = request.client.host if request.client else None
        path, query = request.url.path[:200], shown_query(request.scope)
        bridge.refused(exc.status_code, reason, source, request.method, path, query)
        return PlainTextResponse(reason + "\n", exc.status_code, headers=exc.headers)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if embedded is not None:
            await embedded.start()
        bridge.arp.start()  # the one CAP_NET_RAW warning, at start-up
        phone.prepare()  # before the first hit: later it would hold hits up
        if bridge.store is None:  # `amego-bridge run` opened it before the server started
            bridge.open()
        timers = asyncio.create_task(bridge.run_timers())
        link = None
        log_feed = None
        if broker is not None:
            link = MqttLink(broker, asyncio.get_running_loop(), bridge.on_connected, bridge.on_message)
            bridge.attach(link)
            link.start()
            log_feed = MqttLogHandler(asyncio.get_running_loop(), bridge.publish_log)
            logging.getLogger().addHandler(log_feed)
        try:
            yield
        finally:
            if log_feed is not None:
                logging.getLogger().removeHandler(log_feed)
            timers.cancel()
            bridge.stop_restating()
            if link is not None:
                bridge.device_list.flush()
                link.publish([bridge.offline_message()], force=True)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(5.0):
                        await link.flush()
            bridge.close()
            await phone.CLIENTS.close()
            if link is not None:
                link.stop()
            if embedded is not None:
                await embedded.stop()

    page = StatusPage(bridge)
    hits = Route("/{event}/{phone_type}", action, methods=["GET", "POST"])
    routes = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        *page.routes(),  # before the Action URL route: /setup/<type>, /api/<name>
        hits,
    ]
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={HTTPException: http_error})
    # Inside the Guard: its checks apply to the fast path too.
    app.add_middleware(FastAction, take=take, reserved=first_segments(routes[: routes.index(hits)]))
    app.add_middleware(Guard, bridge=bridge)
    app.state.status_page = page
    # For `uvicorn.Config(http=...)`: a request that does not come in whole is refused (408).
    app.state.http_protocol = with_deadline(
        lambda source, reason: bridge.refused(408, reason, source, "-", "-")
    )
    return app
