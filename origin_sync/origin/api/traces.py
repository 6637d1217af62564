"""Traces at the origin: a server span for every admin write and sync call (a child of the caller's traceparent), and
the memory of which sampled write made which data version, so that a delta answer hands its writes' traceparents to
the edge (WRITE_TRACES_HEADER) and its span links to them: a slow delta is followed from the write to each edge."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import orjson
from aiohttp import web

from edgerec.core.tracing import TRACEPARENT, Tracing
from origin_sync.wire.protocol import MAX_WRITE_TRACES, WRITE_TRACES_HEADER

from .errors import ApiError, Handler

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
SYNC_VERSIONS = "sync_versions"  # request key: the (from, to] versions a delta answer carries, set by its handler


class WriteTraces:
    """The last sampled admin writes (their spans' contexts), by the data version each wrote up to; bounded."""

    def __init__(self, size: int = 1024) -> None:
        self._by_version: OrderedDict[int, tuple[str, Any]] = OrderedDict()
        self._size = size

    def record(self, version: int, traceparent: str, span_context: Any) -> None:
        self._by_version[version] = (traceparent, span_context)
        while len(self._by_version) > self._size:
            self._by_version.popitem(last=False)

    def between(self, since: int, to: int) -> list[tuple[str, Any]]:
        """The writes whose versions are in (since, to], oldest first, at most MAX_WRITE_TRACES."""
        found = [entry for version, entry in self._by_version.items() if since < version <= to]
        return found[-MAX_WRITE_TRACES:]


def _written_version(response: web.StreamResponse) -> int | None:
    """The data version an admin write answered (every write's JSON answer names its `data_version`)."""
    if not isinstance(response, web.Response) or not isinstance(response.body, bytes):
        return None
    try:
        version = orjson.loads(response.body).get("data_version")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    return version if isinstance(version, int) else None


def tracing_middleware(tracing: Tracing, writes: WriteTraces) -> Any:
    """Innermost, around the handler itself: a write's version is known (and remembered) before its task yields to
    the loop again, so a long-poll that the write wakes finds it."""

    @web.middleware
    async def traced(request: web.Request, handler: Handler) -> web.StreamResponse:
        path = request.path
        if path.startswith("/v1/sync/"):
            kind = "sync"
        elif path.startswith("/v1/admin/") and request.method in WRITE_METHODS:
            kind = "admin"
        else:
            return await handler(request)
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else path
        span = tracing.start(
            f"{kind} {request.method} {route}",
            tracing.extract(request.headers.get(TRACEPARENT)),
            {"http.request.method": request.method, "http.route": route},
            server=True,
        )
        status = 500
        try:
            response = await handler(request)
            status = response.status
        except ApiError as exc:
            status = exc.status
            span.set_attribute("edgerec.error", exc.code)
            raise
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            span.set_attribute("http.response.status_code", status)
            if status >= 500:
                from opentelemetry.trace import Status, StatusCode

                span.set_status(Status(StatusCode.ERROR))
            if status >= 300:
                span.end()
        if kind == "admin":
            version = _written_version(response)
            if version is not None:
                span.set_attribute("edgerec.data_version", version)
                if span.is_recording():
                    writes.record(version, tracing.traceparent_of(span), span.get_span_context())
        elif SYNC_VERSIONS in request:
            since, to = request[SYNC_VERSIONS]
            span.set_attribute("sync.since", since)
            span.set_attribute("sync.to", to)
            found = writes.between(since, to)
            if found:
                response.headers[WRITE_TRACES_HEADER] = ",".join(traceparent for traceparent, _ in found)
                for _, write in found:
                    span.add_link(write)
        span.end()
        return response

    return traced
