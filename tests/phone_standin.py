"""A real HTTP server standing in for a phone's web server: records what reaches it, and can
demand basic or digest auth, answer with any status, or hold its answer until released; it can
answer each path with its own body, and go down (close every connection without an answer)."""

import base64
import contextlib
import hashlib
import re
import secrets
import ssl
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.request import parse_http_list

REALM = "phone"


@dataclass(frozen=True)
class Seen:
    method: str
    target: str  # the request target as sent: path and raw query
    authorization: str | None
    body: bytes
    authorized: bool
    cookie: str | None = None  # the Cookie header, if any
    peer: tuple[str, int] | None = None  # the client's address and port: one per connection

    @property
    def path(self) -> str:
        return self.target.partition("?")[0]

    @property
    def query(self) -> str:
        return self.target.partition("?")[2]


def md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


@dataclass
class StandIn:
    """One stand-in phone on a free loopback port."""

    auth: str | None = None  # None, "basic" or "digest"
    username: str = "admin"
    password: str = "s3cret-phone"
    status: int = 200
    body: str = "OK"
    hold: bool = False  # wait for `release` before answering
    replies: dict[str, str] = field(default_factory=dict)  # body by path; `body` for the others
    down: bool = False  # close each connection without an answer, like a phone that is gone
    certificate: tuple[Path, Path] | None = None  # (cert, key): answer over TLS
    seen: list[Seen] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    nonces: set[str] = field(default_factory=set)
    headers: list[tuple[str, str]] = field(default_factory=list)  # added to every answer
    keep_alive: bool = False  # HTTP/1.1: a connection stays open for the next request

    def __post_init__(self) -> None:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                standin.handle(self)

            def do_POST(self) -> None:
                standin.handle(self)

            def log_message(self, format: str, *args: object) -> None:
                pass  # the test reads `seen`, not stderr

        if self.keep_alive:
            Handler.protocol_version = "HTTP/1.1"

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if self.certificate is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*self.certificate)
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.server_address[1]}"

    def requests(self) -> list[Seen]:
        with self.lock:
            return list(self.seen)

    def accepted(self) -> list[Seen]:
        """The requests that passed authentication: what the phone acted on."""
        return [s for s in self.requests() if s.authorized]

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()

    def handle(self, request: BaseHTTPRequestHandler) -> None:
        if self.down:
            request.close_connection = True
            return
        length = int(request.headers.get("Content-Length") or 0)
        body = request.rfile.read(length) if length else b""
        authorization = request.headers.get("Authorization")
        authorized = self.check(request.command, request.path, authorization)
        with self.lock:
            cookie, peer = request.headers.get("Cookie"), request.client_address
            self.seen.append(
                Seen(request.command, request.path, authorization, body, authorized, cookie, peer)
            )
        if not authorized:
            self.answer(request, 401, "login required", self.challenge())
            return
        if self.hold:
            self.release.wait(30)
        headers = [("Location", "/index.htm")] if 300 <= self.status < 400 else []
        reply = self.replies.get(request.path.partition("?")[0], self.body)
        self.answer(request, self.status, reply, headers)

    def answer(
        self, request: BaseHTTPRequestHandler, status: int, text: str, headers: list[tuple[str, str]]
    ) -> None:
        data = text.encode()
        # A bridge that gave up on the request (its timeout) has hung up: a phone's server shrugs,
        # where socketserver printed a traceback into the suite's output.
        with contextlib.suppress(ConnectionError):
            request.send_response(status)
            for name, value in [*headers, *self.headers]:
                request.send_header(name, value)
            request.send_header("Content-Type", "text/plain")
            request.send_header("Content-Length", str(len(data)))
            request.end_headers()
            request.wfile.write(data)

    def challenge(self) -> list[tuple[str, str]]:
        if self.auth == "basic":
            return [("WWW-Authenticate", f'Basic realm="{REALM}"')]
        if self.auth == "digest":
            nonce = secrets.token_hex(8)
            with self.lock:
                self.nonces.add(nonce)
            value = f'Digest realm="{REALM}", qop="auth", nonce="{nonce}", opaque="x", algorithm=MD5'
            return [("WWW-Authenticate", value)]
        return []

    def check(self, method: str, target: str, authorization: str | None) -> bool:
        if self.auth is None:
            return True
        if authorization is None:
            return False
        scheme, _, credentials = authorization.partition(" ")
        if self.auth == "basic":
            expected = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
            return scheme.lower() == "basic" and credentials == expected
        if scheme.lower() != "digest":
            return False
        fields = {}
        for item in parse_http_list(credentials):
            name, _, value = item.strip().partition("=")
            fields[name] = value.strip('"')
        with self.lock:
            known_nonce = fields.get("nonce") in self.nonces
        if not known_nonce or fields.get("username") != self.username or fields.get("uri") != target:
            return False
        if not re.fullmatch(r"[0-9a-f]{8}", fields.get("nc", "")):
            return False
        ha1 = md5(f"{self.username}:{REALM}:{self.password}")
        ha2 = md5(f"{method}:{target}")
        expected = md5(f"{ha1}:{fields['nonce']}:{fields['nc']}:{fields.get('cnonce', '')}:auth:{ha2}")
        return fields.get("qop") == "auth" and fields.get("response") == expected
