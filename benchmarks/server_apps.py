"""The bare endpoints the server comparison serves: the same precomputed JSON answer, as a Starlette route (what a
Python user writes), as a raw ASGI callable, and as a raw RSGI callable (granian's own interface).

Each reads the request body, as any real endpoint must, and answers with the headers of a personalized edgerec
answer. The answer's bytes come from the file named by EDGEREC_CEILING_BODY_FILE, so a server's worker process can
import these by name (`benchmarks.server_apps:starlette_app`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


def _body() -> bytes:
    path = os.environ.get("EDGEREC_CEILING_BODY_FILE")
    return Path(path).read_bytes() if path else b'{"offers":[]}'


BODY = _body()
HEADERS = {"cache-control": "private, no-store", "x-request-id": "0123456789abcdef"}
RAW_HEADERS = [
    (b"content-type", b"application/json"),
    (b"cache-control", b"private, no-store"),
    (b"x-request-id", b"0123456789abcdef"),
    (b"content-length", str(len(BODY)).encode()),
]
HEALTHY = b'{"status":"alive"}'


async def _answer(request: Request) -> Response:
    await request.body()
    return Response(BODY, media_type="application/json", headers=HEADERS)


async def _healthz(request: Request) -> Response:
    return Response(HEALTHY, media_type="application/json")


starlette_app = Starlette(
    routes=[Route("/healthz", _healthz, methods=["GET"]), Route("/{path:path}", _answer, methods=["GET", "POST"])]
)


def raw_asgi_app(body: bytes, headers: list[tuple[bytes, bytes]]) -> Any:
    """A bare ASGI callable (no framework) that reads the request body and answers `body` with `headers`."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        more = scope["method"] == "POST"
        while more:  # the body is read, as any real endpoint must
            more = (await receive()).get("more_body", False)
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return app


asgi_app = raw_asgi_app(BODY, RAW_HEADERS)


RSGI_HEADERS = [(k.decode(), v.decode()) for k, v in RAW_HEADERS if k != b"content-length"]


class RsgiApp:
    """granian's RSGI: the whole body in one await, the answer in one call."""

    def __rsgi_init__(self, loop: Any) -> None:
        pass

    def __rsgi_del__(self, loop: Any) -> None:
        pass

    async def __rsgi__(self, scope: Any, protocol: Any) -> None:
        if scope.method == "POST":
            await protocol()
        protocol.response_bytes(200, RSGI_HEADERS, BODY)


rsgi_app = RsgiApp()
