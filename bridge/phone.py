"""HTTP requests to phones (dial, commands): basic or digest auth, timeouts, optional TLS.

The one httpx adapter for phones. Every failure becomes a one-line reason for the command's
response; no credential reaches a reason or a log line (a Grandstream passcode travels in the
query, so the request's target is never shown either).
"""

import asyncio
import base64
import contextlib
import functools
import http.cookiejar
import importlib
import logging
import re
import ssl
import weakref
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from ipaddress import IPv6Address, ip_address
from urllib.parse import quote

import httpx

from bridge.calls import Phone
from bridge.commands import HttpRequest
from bridge.config import Config, DeviceConfig, Network, split_host_port
from bridge.phone_commands import AuthKind, CommandSet
from bridge.profiles import Profile, profile_for


class HideQuery(logging.Filter):
    """httpx logs every request's URL at INFO, and a Grandstream passcode is in the query."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                a.copy_with(query=None) if isinstance(a, httpx.URL) else a for a in record.args
            )
        return True


HIDE_QUERY = HideQuery()
MAX_BODY = 65536  # characters of a reply kept for whoever reads it


class AuthScheme(StrEnum):
    AUTO = "auto"  # basic first; digest when the phone's 401 asks for it
    BASIC = "basic"
    DIGEST = "digest"


@dataclass(frozen=True, slots=True)
class Target:
    """Where one phone's web server is and how to log in to it."""

    address: str  # host or host:port; an IPv6 address in brackets
    tls: bool = False
    verify_tls: bool = True
    username: str = ""
    password: str = field(default="", repr=False)
    auth: AuthScheme = AuthScheme.AUTO
    timeout: float = 5.0  # seconds for the whole exchange


@dataclass(frozen=True, slots=True)
class Outcome:
    error: str | None = None  # None: the phone took the command
    http_status: int | None = None
    body: str = field(default="", repr=False)  # a successful reply's text (status polls read it)

    @property
    def ok(self) -> bool:
        return self.error is None


def phone_address(configured: str, learned: str | None, networks: Sequence[Network] = ()) -> str | None:
    """The phone's host[:port]: the configured one, else the IP its hits gave if it lies in
    `networks` (where phones may send from); None when there is neither."""
    if configured:
        host, port = split_host_port(configured)  # checked when the config was read
    elif learned:
        try:
            address = ip_address(learned.split("%", 1)[0])
        except ValueError:
            return None  # a hit's `ip` is only trusted as a literal address
        if not any(address in net for net in networks):
            return None  # a hit must not send the phone's login to some other host
        host, port = str(address), None
    else:
        return None
    try:
        if isinstance(ip_address(host), IPv6Address):
            host = f"[{host}]"
    except ValueError:
        pass  # a host name, as configured
    return host if port is None else f"{host}:{port}"


@dataclass(frozen=True, slots=True)
class Reach:
    """How to reach one phone: its settings, type, command data, and where to send (None: unknown)."""

    device: DeviceConfig
    phone_type: str
    commands: CommandSet
    target: "Target | None"


def reach(config: Config, profiles: Mapping[str, Profile], state: Phone) -> Reach:
    """The phone's address (configured, else learned from its hits) and login: the device's,
    else the `[control]` one, else the vendor's factory login."""
    dc = config.devices.get(state.device) or DeviceConfig(state.device)
    phone_type = dc.phone_type or state.phone_type
    commands = profile_for(phone_type, profiles).commands
    address = phone_address(dc.ip, state.ip, config.http.allowed_networks)
    if address is None:
        return Reach(dc, phone_type, commands, None)
    control = config.control
    username, password = commands.default_username, commands.default_password
    for pair in ((dc.username, dc.password), (control.username, control.password)):
        if any(pair):
            username, password = pair
            break
    target = Target(
        address,
        tls=dc.tls,
        verify_tls=dc.verify_tls,
        username=username,
        password=password,
        auth=AuthScheme(dc.auth),
        timeout=control.timeout,
    )
    return Reach(dc, phone_type, commands, target)


class BasicThenDigest(httpx.Auth):
    """Basic credentials up front; when the phone answers 401 asking for digest, digest instead."""

    def __init__(self, username: str, password: str) -> None:
        self.username, self.password = username, password

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        token = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        request.headers["Authorization"] = f"Basic {token}"
        response = yield request
        challenges = response.headers.get_list("www-authenticate")
        if response.status_code != 401 or not any(c.lower().startswith("digest ") for c in challenges):
            return
        del request.headers["Authorization"]
        digest = httpx.DigestAuth(self.username, self.password).auth_flow(request)
        next(digest)  # the request as it is: no challenge known yet
        try:
            retry = digest.send(response)
        except StopIteration:
            return
        yield retry


@functools.cache
def tls_context(verify: bool) -> ssl.SSLContext:
    """Made once: httpx would build (and load CA certificates for) one per client, ~25 ms each."""
    context = ssl.create_default_context()
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


class RefuseCookies(http.cookiejar.DefaultCookiePolicy):
    """A phone's cookies are not kept: each request stands alone, as if its client were new."""

    def set_ok(self, cookie: http.cookiejar.Cookie, request: object) -> bool:
        return False


class Clients:
    """The HTTP clients of the requests to phones: one per TLS setting and event loop (httpcore's
    pool belongs to the loop it was made on), shared by every poll and command there. A client
    made and closed for each request took 0.12-0.2 ms of CPU, a third of a poll of a phone that
    refuses it: 2-3 % of a core with 10,000 phones polled every minute. Still each request has a
    connection of its own, closed after its answer (a phone's web server is small), and no
    cookie from an earlier one."""

    def __init__(self) -> None:
        self.made: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[bool, httpx.AsyncClient]]
        self.made = weakref.WeakKeyDictionary()

    def get(self, verify: bool) -> httpx.AsyncClient:
        clients = self.made.setdefault(asyncio.get_running_loop(), {})
        client = clients.get(verify)
        if client is None:
            client = clients[verify] = httpx.AsyncClient(
                verify=tls_context(verify),
                follow_redirects=False,
                limits=httpx.Limits(max_connections=None, max_keepalive_connections=0),
                cookies=http.cookiejar.CookieJar(RefuseCookies()),
            )
        return client

    async def close(self) -> None:
        """The running loop's clients (the bridge's, when it stops)."""
        for client in self.made.pop(asyncio.get_running_loop(), {}).values():
            await client.aclose()


CLIENTS = Clients()


# What httpx imports on its first connection, not before (35 ms on an idle machine).
FIRST_CONNECTION_MODULES = ("anyio._backends._asyncio", "httpcore._backends.anyio")


def prepare() -> None:
    """Do now what a phone's first request would do on the event loop: load the CA certificates
    (about 20 ms) and the modules httpx imports on its first connection (about 35 ms). Left to
    the first poll, a minute after start, it held up every hit for 50-80 ms under load."""
    tls_context(True)
    tls_context(False)
    for name in FIRST_CONNECTION_MODULES:
        # anyio and httpcore come unpinned with httpx and starlette: should a later release move
        # these, the first request loads what it needs, and the bridge still starts.
        with contextlib.suppress(ImportError):
            importlib.import_module(name)


def http_auth(target: Target, commands: CommandSet) -> httpx.Auth | None:
    if commands.auth is not AuthKind.HTTP or not (target.username or target.password):
        return None
    if target.auth is AuthScheme.BASIC:
        return httpx.BasicAuth(target.username, target.password)
    if target.auth is AuthScheme.DIGEST:
        return httpx.DigestAuth(target.username, target.password)
    return BasicThenDigest(target.username, target.password)


async def send(target: Target, request: HttpRequest, commands: CommandSet) -> Outcome:
    """Send one request to a phone and judge its answer by the phone type's rules."""
    timeout = target.timeout
    httpx_log = logging.getLogger("httpx")
    if HIDE_QUERY not in httpx_log.filters:
        httpx_log.addFilter(HIDE_QUERY)
    url = httpx.URL(f"{'https' if target.tls else 'http'}://{target.address}{request.target}")
    headers = {"Content-Type": request.content_type} if request.content_type else {}
    try:
        async with asyncio.timeout(timeout):
            response = await CLIENTS.get(target.verify_tls).request(
                request.method,
                url,
                content=request.body or None,
                headers=headers,
                auth=http_auth(target, commands),
                timeout=timeout,
            )
    except (TimeoutError, httpx.TimeoutException):
        return Outcome(f"timeout: the phone at {target.address} did not answer within {timeout:g} s")
    except httpx.ConnectError as err:
        text = scrub(str(err), target)
        if "CERTIFICATE_VERIFY_FAILED" in text:
            return Outcome(
                f"TLS certificate of the phone at {target.address} not trusted "
                "(a self-signed one needs verify_tls = false)"
            )
        return Outcome(f"phone unreachable at {target.address}: {text or type(err).__name__}")
    except httpx.HTTPError as err:
        return Outcome(f"request to the phone at {target.address} failed: {scrub(str(err), target)}")
    return judge(response, target, commands)


def judge(response: httpx.Response, target: Target, commands: CommandSet) -> Outcome:
    status = response.status_code
    if status in commands.success:
        if commands.error_body and re.search(commands.error_body, response.text[:4096]):
            answer = " ".join(response.text[:120].split())
            return Outcome(f"the phone refused the command: {scrub(answer, target)}", status)
        return Outcome(None, status, response.text[:MAX_BODY])
    if status == 401:
        if target.username or target.password:
            return Outcome("401 wrong credentials: the phone refused the user name or password", status)
        return Outcome("401: the phone asks for a login; set [devices.<id>] username and password", status)
    if status == 403:
        hint = f"; {commands.refused_hint}" if commands.refused_hint else ""
        return Outcome(f"403 refused by the phone{hint}", status)
    if 300 <= status < 400:
        return Outcome(f"HTTP {status} from the phone: a redirect, not followed", status)
    return Outcome(f"HTTP {status} from the phone", status)


def scrub(text: str, target: Target) -> str:
    """The text without the phone's password in it, in case an error message quotes a URL."""
    for secret in {target.password, quote(target.password, safe="")}:
        if len(secret) >= 3:
            text = text.replace(secret, "***")
    return " ".join(text.split())
