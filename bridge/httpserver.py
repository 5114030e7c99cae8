"""The HTTP server's connections: uvicorn's, with a deadline for each request to come in whole.

uvicorn closes a connection only while it sits idle between two requests (`timeout_keep_alive`).
One that never sends a request, or sends it a byte at a time, it keeps for as long as its peer
does: each such connection holds a file descriptor, and enough of them stop the bridge taking
hits at all (a process may have 1,024 open by default). Phones send a hit at once, in one or
two packets. So a request that is not in whole `REQUEST_WITHIN` seconds after the connection
opened (or after the previous request on it was answered, and its first byte came) is refused
with `408` and its one-line reason, and the connection closed; one timer looks over the
server's connections for such requests ten times a deadline, while there are any.
"""

import asyncio
from collections.abc import Callable

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

REQUEST_WITHIN = 10.0  # seconds for a request to come in whole
SWEEPS = 10  # looks for late requests in REQUEST_WITHIN


def with_deadline(
    refuse: Callable[[str | None, str], None], within: float | None = None
) -> type[asyncio.Protocol]:
    """uvicorn's httptools protocol (`uvicorn.Config(http=...)`), refusing a request that does not
    come in whole within `within` seconds (default `REQUEST_WITHIN`): `refuse(source, reason)` is
    told first, then the client gets `408` and the connection is closed."""
    seconds = REQUEST_WITHIN if within is None else within
    every = seconds / SWEEPS  # a late request is refused within a tenth of the deadline after it
    reason = f"no complete request within {seconds:g} s"
    body = f"{reason}\n".encode()
    answer = (
        b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
        + f"content-length: {len(body)}\r\nconnection: close\r\n\r\n".encode()
        + body
    )

    class Deadline(HttpToolsProtocol):
        began: float | None = None  # when the request under way began to come in; None: none is
        sweep_due: asyncio.TimerHandle | None = None  # the next look over the server's connections

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self.began = self.loop.time()
            if Deadline.sweep_due is None:
                Deadline.sweep_due = self.loop.call_later(every, self._sweep)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            if self.began is None:  # the next request on a kept-alive connection: from its first byte
                self.began = self.loop.time()

        def on_message_complete(self) -> None:
            self.began = None
            super().on_message_complete()

        def _sweep(self) -> None:
            """Refuse the requests that are late, on every connection of the server: one timer
            for them all, rather than one set and cancelled for each hit (1.7 µs with uvloop)."""
            Deadline.sweep_due = None
            late = self.loop.time() - seconds
            for connection in list(self.connections):
                if (
                    isinstance(connection, Deadline)
                    and connection.began is not None
                    and connection.began <= late
                ):
                    connection._expired()
            if self.connections:
                Deadline.sweep_due = self.loop.call_later(every, self._sweep)

        def _expired(self) -> None:
            self.began = None
            if self.transport.is_closing():
                return
            try:
                refuse(self.client[0] if self.client else None, reason)
            finally:  # the connection goes, whatever telling of it does
                self.transport.write(answer)
                self.transport.close()

    return Deadline
