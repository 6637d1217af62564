"""Connection-level limits uvicorn does not have: a request line and headers larger than a bound get 431, a
request whose headers or body do not arrive in time (a client that connects and stalls, slowloris) gets 408, a body
declared larger than the app takes gets 413 as soon as the headers are read, and what is not HTTP/1.x at all gets
400 (HTTP/0.9 and versions other than 1.x included): all as JSON, connection closed, and counted in
`edgerec_connections_cut_total{reason}`.
An answer that leaves before its request's body has arrived (413 at the headers, or any app's early error) ends the
connection too: nothing would read the rest of that body, and the next request could not be told from it.

uvicorn's httptools protocol buffers a header of any size and waits for one, or for a body, forever; it only times
out idle keep-alive connections. `GuardedHttpToolsProtocol` is that protocol plus the bounds, which it takes from the
app's lifespan state (`ConnectionLimits`), so that worker processes get them the same way as the app.

No timer per request: a connection notes when its current phase (headers, body) must end, which costs one read of
the loop's clock, and one `Watchdog` per worker looks over the connections a few times a second and cuts those past
their deadline. (Arming and cancelling a timer for the headers and another for the body cost about 4 µs a request,
a twentieth of a whole personalized answer.)
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Callable

import httptools
import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

LIFESPAN_KEY = "edgerec.connection_limits"
HEADER_TOO_LARGE = "header_too_large"
HEADER_TIMEOUT = "header_timeout"
BODY_TIMEOUT = "body_timeout"
BODY_TOO_LARGE = "body_too_large"  # the code the apps answer an over-long body with too
# Not HTTP/1.x at all (400 bad_request, 400 http_version_not_supported): the reason it is counted under.
INVALID_REQUEST = "invalid_request"
BAD_REQUEST = "bad_request"
VERSION_NOT_SUPPORTED = "http_version_not_supported"
# After an answer that leaves a request's body unread, the connection sends its FIN at once and reads (and drops)
# what the client still sends for at most this long, so that the client gets to read the answer: closing with
# unread bytes would reset the connection, and a reset can destroy the answer in the client's buffers before it
# is read.
LINGER_S = 2.0
# scope["extensions"][HOLD_HEAD]: called just before sending `http.response.start`, it holds the head back until the
# body, so that the two go out in one write.
HOLD_HEAD = "edgerec.hold_response_head"


class Watchdog:
    """Cuts the connections of one worker whose headers or body are overdue, checking every `interval_s`."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._connections: set["GuardedHttpToolsProtocol"] = set()
        self._handle: asyncio.TimerHandle | None = None

    def watch(self, connection: "GuardedHttpToolsProtocol") -> None:
        self._connections.add(connection)
        if self._handle is None:
            self._handle = asyncio.get_running_loop().call_later(self.interval_s, self._sweep)

    def forget(self, connection: "GuardedHttpToolsProtocol") -> None:
        self._connections.discard(connection)

    def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        for connection in [c for c in self._connections if c.deadline is not None and now >= c.deadline]:
            connection.overdue()
        # Idle edges stop sweeping; the next connection starts it again.
        self._handle = loop.call_later(self.interval_s, self._sweep) if self._connections else None


@dataclass(frozen=True)
class ConnectionLimits:
    max_header_bytes: int  # request line plus headers
    header_timeout_s: float  # from the connection (or the request's first byte) to its last header; 0: none
    on_cut: Callable[[str], None]  # counts a cut connection, by reason
    body_timeout_s: float = 5.0  # from the last header to the body's last byte; 0: none
    max_body_bytes: int = 0  # a declared Content-Length over it is refused at the headers (413); 0: no bound here
    watchdog: Watchdog = field(init=False)

    def __post_init__(self) -> None:
        # Deadlines are met to within a tenth of the shorter timeout (and within 0.5 s).
        timeouts = [t for t in (self.header_timeout_s, self.body_timeout_s) if t > 0]
        object.__setattr__(self, "watchdog", Watchdog(min([0.5, *(t / 10 for t in timeouts)])))


class CoalescingTransport:
    """A connection's transport that can hold one write back until the next one: a response head until its body.

    uvicorn writes the head and the body of a response with two write(2) calls, and each is a TCP segment that the
    kernel carries through its whole send path (on loopback, through the receiver's too: perf under wrk puts the
    kernel at a fifth of the edge's CPU). Held and joined, a small answer leaves in one segment: 3 µs less CPU per
    request in an A/B under wrk. Only what asks for it (the hot endpoint, through scope["extensions"][HOLD_HEAD])
    is held, and whatever is held goes out at the next write, when the response completes, or before the
    connection closes."""

    __slots__ = ("_transport", "_held", "_hold_next")

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._held: bytes | None = None
        self._hold_next = False

    def hold_next_write(self) -> None:
        self._hold_next = True

    def write(self, data: bytes) -> None:
        if self._hold_next:
            self._hold_next = False
            self._held = data
            return
        held = self._held
        if held is not None:
            self._held = None
            data = held + data
        self._transport.write(data)

    def flush(self) -> None:
        self._hold_next = False
        held = self._held
        if held is not None:
            self._held = None
            self._transport.write(held)

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:  # everything else is the transport's own
        return getattr(self._transport, name)


def _error_response(status: int, reason: bytes, code: str, message: str) -> bytes:
    body = orjson.dumps({"error": {"code": code, "message": message}})
    return (
        b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncache-control: private, no-store\r\n"
        b"content-length: %d\r\nconnection: close\r\n\r\n" % (status, reason, len(body))
    ) + body


class _Refused(Exception):
    """Raised in a parser callback that has answered and closed: it stops the parser in the middle of its input."""


class _Discard:
    """The parser of a connection that has given its last answer: what the client still sends is dropped unread."""

    __slots__ = ()

    def feed_data(self, data: bytes) -> None:
        pass


_DISCARD = _Discard()


def _silence(cycle: Any) -> None:
    """A request this protocol answers itself: its app sees a client that went away (no body, nothing sent, no
    `100 Continue` either)."""
    cycle.disconnected = True
    cycle.waiting_for_100_continue = False


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a bound on header bytes and on the time headers and body may take, on the
    declared body size, and its invalid-request answers as JSON."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._limits: ConnectionLimits | None = self.app_state.get(LIFESPAN_KEY)
        self._in_headers = True  # waiting for (the rest of) a request line and headers
        self._header_bytes = 0
        self._message_began = False
        self._sized: Any = None  # the request cycle whose declared body size was checked (once, on the slow path)
        self._lingering = False
        self.deadline: float | None = None  # loop time by which the current phase must end; None: no phase is timed

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # uvicorn's protocol and each request's cycle write through this (its flow control keeps the transport).
        self._coalescing = CoalescingTransport(transport)
        self.transport = self._coalescing  # type: ignore[assignment]
        self._extensions = {HOLD_HEAD: self._coalescing.hold_next_write}
        if self._limits is not None:
            self._limits.watchdog.watch(self)
            self._start_headers()  # a connection that never sends a request is cut too

    def connection_lost(self, exc: Exception | None) -> None:
        self.deadline = None
        if self._limits is not None:
            self._limits.watchdog.forget(self)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        limits = self._limits
        if limits is not None and self._in_headers:
            # No per-header callback on the hot path: the chunk may complete the headers only if their end,
            # CRLF CRLF, lies within the bytes still allowed.
            room = limits.max_header_bytes - self._header_bytes
            if len(data) > room and data.find(b"\r\n\r\n", 0, max(room, 0) + 4) < 0:
                self._cut_too_large()
                return
        self._message_began = False
        # uvicorn's data_received, with the parser's own reason in a JSON 400 instead of a text/plain one.
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        except httptools.HttpParserError as exc:
            if not self.transport.is_closing():  # else a callback answered and closed already (_Refused)
                self._bad_request(f"invalid HTTP request: {exc}")
            return
        if limits is None:
            return
        # What follows is the slow path: a read that left a request line, headers or a body unfinished. A request
        # that arrives whole in one read (every normal one) passes two attribute tests and nothing else.
        if self._in_headers:
            if self.transport.is_closing():
                return
            if not self._message_began:
                # All of this chunk went into an unfinished request line or header, which httptools buffers itself.
                # (A chunk in which a request began is not counted: it may hold the end of the previous one, and
                # the check above catches the next chunk, so the bound may be passed by at most one read.)
                self._header_bytes += len(data)
                if self._header_bytes > limits.max_header_bytes:
                    self._cut_too_large()
                    return
            self._refuse_http_09(data)
        elif self.cycle.more_body and self._sized is not self.cycle:
            # The headers are read and the body is still to come: refuse now what it declares to be too large.
            self._sized = self.cycle
            if not self.pipeline:  # else it waits behind an earlier answer, and its app refuses it in turn
                self._refuse_declared_body(limits)

    def _refuse_http_09(self, data: bytes) -> None:
        """An HTTP/0.9 request line (no version: `GET /` CRLF) is answered at once; llhttp would wait for headers."""
        version = self.parser.get_http_version()
        # "0.0": the request line is not finished by llhttp's account; a line break after its URL ends it unversioned.
        if version == "0.9" or (version == "0.0" and data.endswith(b"\n") and getattr(self, "url", b"")):
            self._version_not_supported("0.9")

    def _refuse_declared_body(self, limits: ConnectionLimits) -> None:
        limit = limits.max_body_bytes
        if not limit:
            return
        for name, value in self.headers:
            if name == b"content-length":
                if int(value) > limit:  # llhttp accepts digits only there
                    _silence(self.cycle)  # its app's task, which starts next, says nothing
                    self._cut(
                        413,
                        b"Request Entity Too Large",
                        BODY_TOO_LARGE,
                        f"request body over {limit} bytes",
                        linger=True,
                    )
                return

    def send_400_response(self, msg: str) -> None:
        """uvicorn's text/plain 400, should any of its code still call it: the JSON one."""
        self._bad_request(msg)

    def _bad_request(self, message: str) -> None:
        self.logger.warning("%s", message)  # as uvicorn does (a JSON line: edgerec.core.logs)
        self._cut(400, b"Bad Request", BAD_REQUEST, message, reason_counted=INVALID_REQUEST)

    def _version_not_supported(self, version: str) -> None:
        if version == "0.9":
            self._cut(
                400,
                b"Bad Request",
                BAD_REQUEST,
                "HTTP/0.9 is not supported; send HTTP/1.1",
                reason_counted=INVALID_REQUEST,
            )
        else:
            self._cut(
                400,
                b"Bad Request",
                VERSION_NOT_SUPPORTED,
                f"HTTP/{version} is not supported; send HTTP/1.1",
                reason_counted=INVALID_REQUEST,
            )

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.scope["extensions"] = self._extensions  # type: ignore[typeddict-unknown-key]
        self._in_headers = True
        self._message_began = True
        self._header_bytes = 0
        if self.deadline is None:  # else the connection's (or a pipelined request's) deadline still runs
            self._start_headers()

    def on_headers_complete(self) -> None:
        self._in_headers = False
        self._header_bytes = 0
        if self._limits is not None:
            timeout = self._limits.body_timeout_s
            self.deadline = self.loop.time() + timeout if timeout > 0 else None
        super().on_headers_complete()
        version = self.scope["http_version"]  # uvicorn's, read from the parser once
        if version != "1.1" and version != "1.0":
            if self.cycle is not None:
                _silence(self.cycle)  # the task uvicorn just made for it says nothing
            self._version_not_supported(version)
            raise _Refused(version)  # stops the parser here; data_received sees the connection closing

    def on_message_complete(self) -> None:
        self.deadline = None
        super().on_message_complete()

    def on_response_complete(self) -> None:
        self._coalescing.flush()  # a held head whose body never came (not expected)
        # Answered before its body arrived (an early error: 413, 415, 429, ...): the connection ends, lingering.
        # (With requests waiting in the pipeline, the answer is an earlier request's, whose body was complete.)
        unread = self.cycle.more_body and not self.pipeline
        super().on_response_complete()
        if unread and not self.transport.is_closing():
            self._linger()

    def _start_headers(self) -> None:
        if self._limits is not None and self._limits.header_timeout_s > 0:
            self.deadline = self.loop.time() + self._limits.header_timeout_s

    def overdue(self) -> None:
        """The watchdog found this connection past its deadline: 408, as JSON, and closed (or its lingering is over)."""
        self.deadline = None
        if self._limits is None or self.transport.is_closing():
            return
        if self._lingering:
            self.transport.close()
        elif self._in_headers:
            self._cut(
                408,
                b"Request Timeout",
                HEADER_TIMEOUT,
                f"request line and headers not received within {self._limits.header_timeout_s:g} s",
            )
        else:
            self._cut(
                408,
                b"Request Timeout",
                BODY_TIMEOUT,
                f"request body not received within {self._limits.body_timeout_s:g} s",
            )

    def _cut_too_large(self) -> None:
        assert self._limits is not None
        self._cut(
            431,
            b"Request Header Fields Too Large",
            HEADER_TOO_LARGE,
            f"request line and headers over {self._limits.max_header_bytes} bytes",
        )

    def _cut(
        self,
        status: int,
        reason: bytes,
        code: str,
        message: str,
        *,
        reason_counted: str | None = None,
        linger: bool = False,
    ) -> None:
        """The one way this protocol answers by itself: a JSON error, `connection: close`, counted, and closed."""
        self.deadline = None
        if self._limits is not None:
            self._limits.on_cut(reason_counted or code)
        if not self.transport.is_closing():
            self.transport.write(_error_response(status, reason, code, message))
            if linger:
                self._linger()
            else:
                self.transport.close()

    def _linger(self) -> None:
        """No more answers on this connection: FIN now, drop what the client still sends, close when it closes (or
        after LINGER_S, by the watchdog). Without a watchdog, or where the transport cannot half-close (TLS), it
        closes at once."""
        self._coalescing.flush()
        self.parser = _DISCARD  # type: ignore[assignment]
        self._sized = self.cycle
        transport = self.transport
        if self._limits is None or not transport.can_write_eof():
            transport.close()
            return
        transport.write_eof()
        self._lingering = True
        self.deadline = self.loop.time() + LINGER_S
