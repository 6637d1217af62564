"""The ASGI application the edge's server runs: the answer's path straight to its endpoint, the rest through
Starlette; with the access log on, the same behind its wrapper."""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette

from edgerec.core.access import AccessLog
from edgerec.core.shutdown import Drain

from .recommendations import RecommendationsEndpoint


class HotPath:
    """The ASGI app uvicorn runs: `/v1/recommendations` goes straight to its endpoint, everything else (and the
    lifespan) through Starlette. Starlette's router and its two error middlewares cost 7-14 µs a request (measured
    in isolation); the endpoint turns its own errors into JSON responses itself. While the edge drains, every
    answer says `Connection: close`, so that clients on kept-alive connections reconnect to another replica."""

    def __init__(self, starlette: Starlette, path: str, endpoint: RecommendationsEndpoint) -> None:
        self.starlette = starlette
        self.state = starlette.state
        self._path = path
        self._endpoint = endpoint
        self._drain: Drain = starlette.state.drain

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if self._drain.started is not None and scope["type"] == "http":
            send = _closing(send)
        if scope["type"] == "http" and scope["path"] == self._path:
            await self._endpoint(scope, receive, send)
        else:
            await self.starlette(scope, receive, send)


def _closing(send: Any) -> Any:
    async def send_closing(message: dict) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", ()), (b"connection", b"close")]}
        await send(message)

    return send_closing


class AccessLoggedHotPath(HotPath):
    """HotPath with an access log line per sampled request (edgerec.core.access). Built only when
    EDGEREC_ACCESS_LOG is not off, so that with it off the hot path runs exactly as without the feature."""

    def __init__(self, starlette: Starlette, path: str, endpoint: RecommendationsEndpoint, rate: float) -> None:
        super().__init__(starlette, path, endpoint)
        self._logged = AccessLog(rate).asgi(super().__call__)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        await self._logged(scope, receive, send)
