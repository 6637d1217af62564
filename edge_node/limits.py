"""Connection-level limits uvicorn does not have: a request line and headers larger than a bound get 431, and ones
that do not arrive in time (a client that connects and stalls, slowloris) get 408, both as JSON, connection closed,
and counted in `edgerec_connections_cut_total{reason}` with the requests that are not HTTP at all (400).

uvicorn's httptools protocol buffers a header of any size and waits for one forever; it only times out idle
keep-alive connections. `GuardedHttpToolsProtocol` is that protocol plus the two bounds, which it takes from the
app's lifespan state (`ConnectionLimits`), so that worker processes get them the same way as the app.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Callable

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

LIFESPAN_KEY = "edgerec.connection_limits"
HEADER_TOO_LARGE = "header_too_large"
HEADER_TIMEOUT = "header_timeout"
INVALID_REQUEST = "invalid_request"  # not HTTP/1.1 at all: uvicorn's 400, counted here


@dataclass(frozen=True)
class ConnectionLimits:
    max_header_bytes: int  # request line plus headers
    header_timeout_s: float  # from the connection (or the request's first byte) to its last header
    on_cut: Callable[[str], None]  # counts a cut connection, by reason


def _error_response(status: int, reason: bytes, code: str, message: str) -> bytes:
    body = orjson.dumps({"error": {"code": code, "message": message}})
    return (b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncache-control: private, no-store\r\n"
            b"content-length: %d\r\nconnection: close\r\n\r\n" % (status, reason, len(body))) + body


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a bound on header bytes and on the time headers may take."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._limits: ConnectionLimits | None = self.app_state.get(LIFESPAN_KEY)
        self._in_headers = True  # waiting for (the rest of) a request line and headers
        self._header_bytes = 0
        self._message_began = False
        self._header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_timer()  # a connection that never sends a request is cut too

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        limits = self._limits
        if limits is None:
            super().data_received(data)
            return
        if self._in_headers:
            # No per-header callback on the hot path: the chunk may complete the headers only if their end,
            # CRLF CRLF, lies within the bytes still allowed.
            room = limits.max_header_bytes - self._header_bytes
            if len(data) > room and data.find(b"\r\n\r\n", 0, max(room, 0) + 4) < 0:
                self._cut_too_large()
                return
        self._message_began = False
        super().data_received(data)  # uvicorn's own parsing and error handling
        if self.transport.is_closing():
            return
        if self._in_headers and not self._message_began:
            # All of this chunk went into an unfinished request line or header, which httptools buffers itself.
            # (A chunk in which a request began is not counted: it may hold the end of the previous one, and the
            # check above catches the next chunk, so the bound may be passed by at most one read.)
            self._header_bytes += len(data)
            if self._header_bytes > limits.max_header_bytes:
                self._cut_too_large()

    def send_400_response(self, msg: str) -> None:
        if self._limits is not None:
            self._limits.on_cut(INVALID_REQUEST)
        super().send_400_response(msg)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_headers = True
        self._message_began = True
        self._header_bytes = 0
        if self._header_timer is None:
            self._arm_header_timer()

    def on_headers_complete(self) -> None:
        self._in_headers = False
        self._header_bytes = 0
        self._disarm_header_timer()
        super().on_headers_complete()

    def _arm_header_timer(self) -> None:
        if self._limits is not None and self._limits.header_timeout_s > 0:
            self._header_timer = self.loop.call_later(self._limits.header_timeout_s, self._header_timeout)

    def _disarm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_timeout(self) -> None:
        self._header_timer = None
        if self._in_headers and self._limits is not None and not self.transport.is_closing():
            self._cut(408, b"Request Timeout", HEADER_TIMEOUT,
                      f"request line and headers not received within {self._limits.header_timeout_s:g} s")

    def _cut_too_large(self) -> None:
        assert self._limits is not None
        self._cut(431, b"Request Header Fields Too Large", HEADER_TOO_LARGE,
                  f"request line and headers over {self._limits.max_header_bytes} bytes")

    def _cut(self, status: int, reason: bytes, code: str, message: str) -> None:
        self._disarm_header_timer()
        assert self._limits is not None
        self._limits.on_cut(code)
        if not self.transport.is_closing():
            self.transport.write(_error_response(status, reason, code, message))
            self.transport.close()
