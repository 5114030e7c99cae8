"""The HTTP server's connections: uvicorn's, with a deadline for each request to come in whole.

uvicorn closes a connection only while it sits idle between two requests (`timeout_keep_alive`).
One that never sends a request, or sends it a byte at a time, it keeps for as long as its peer
does: each such connection holds a file descriptor, and enough of them stop the bridge taking
hits at all (a process may have 1,024 open by default). Phones send a hit at once, in one or
two packets. So a request that is not in whole `REQUEST_WITHIN` seconds after the connection
opened (or after the previous request on it was answered, and its first byte came) is refused
with `408` and its one-line reason, and the connection closed.
"""

import asyncio
from collections.abc import Callable

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

REQUEST_WITHIN = 10.0  # seconds for a request to come in whole


def with_deadline(
    refuse: Callable[[str | None, str], None], within: float | None = None
) -> type[asyncio.Protocol]:
    """uvicorn's httptools protocol (`uvicorn.Config(http=...)`), refusing a request that does not
    come in whole within `within` seconds (default `REQUEST_WITHIN`): `refuse(source, reason)` is
    told first, then the client gets `408` and the connection is closed."""
    seconds = REQUEST_WITHIN if within is None else within
    reason = f"no complete request within {seconds:g} s"
    body = f"{reason}\n".encode()
    answer = (
        b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
        + f"content-length: {len(body)}\r\nconnection: close\r\n\r\n".encode()
        + body
    )

    class Deadline(HttpToolsProtocol):
        deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._arm()  # the next request on a kept-alive connection: from its first byte

        def on_message_complete(self) -> None:
            self._disarm()
            super().on_message_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            if self.deadline is None:
                self.deadline = self.loop.call_later(seconds, self._expired)

        def _disarm(self) -> None:
            if self.deadline is not None:
                self.deadline.cancel()
                self.deadline = None

        def _expired(self) -> None:
            self.deadline = None
            if self.transport.is_closing():
                return
            try:
                refuse(self.client[0] if self.client else None, reason)
            finally:  # the connection goes, whatever telling of it does
                self.transport.write(answer)
                self.transport.close()

    return Deadline
