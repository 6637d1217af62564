"""The ceiling: a bare Starlette endpoint answering a precomputed JSON, on the edge's uvicorn settings.

No Python web service on this stack answers faster, so edgerec's throughput over this one says how
much of the budget the recommendation work itself takes.

    python -m benchmarks.ceiling --port 8123 --body-file answer.json
    python -m benchmarks.ceiling --port 8123 --body-file answer.json --raw

`--raw` serves the server's own floor instead: a bare ASGI callable (no framework) that reads the request
body and answers the same bytes with the headers of a personalized edgerec answer (content type, cache
control, Server-Timing, request id, length). What uvicorn and the kernel cost per request on their own is
the part of edgerec's budget no application code can win back.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route

from edge_node.server import UVICORN_OPTIONS

from .server_apps import raw_asgi_app


def build_app(body: bytes | None = None) -> Starlette:
    if body is None:  # a uvicorn worker process: the body file comes through the environment
        body = Path(os.environ["EDGEREC_CEILING_BODY_FILE"]).read_bytes()
    headers = {"Cache-Control": "private, no-store"}

    async def answer(request) -> Response:  # the body is not read: this is the floor
        return Response(body, media_type="application/json", headers=headers)

    async def healthz(request) -> Response:
        return Response(b'{"status":"alive"}', media_type="application/json")

    return Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET"]),
            Route("/{path:path}", answer, methods=["GET", "POST"]),
        ]
    )


def build_raw_app(body: bytes | None = None):
    if body is None:
        body = Path(os.environ["EDGEREC_CEILING_BODY_FILE"]).read_bytes()
    headers = [
        (b"content-type", b"application/json"),
        (b"cache-control", b"private, no-store"),
        (b"server-timing", b"parse;dur=0.010, model;dur=0.030, total;dur=0.090"),
        (b"x-request-id", b"0123456789abcdef"),
        (b"content-length", str(len(body)).encode()),
    ]
    return raw_asgi_app(body, headers)


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes (default 1)")
    parser.add_argument("--body-file", type=Path, required=True, help="the JSON answered to every request")
    parser.add_argument(
        "--raw", action="store_true", help="a bare ASGI callable instead of Starlette: the server's floor"
    )
    args = parser.parse_args(argv)
    os.environ["EDGEREC_CEILING_BODY_FILE"] = str(args.body_file.resolve())
    factory = "benchmarks.ceiling:build_raw_app" if args.raw else "benchmarks.ceiling:build_app"
    app = factory if args.workers > 1 else (build_raw_app() if args.raw else build_app())
    # The same settings as edge_node.server.serve, so the two differ only in the work per request.
    uvicorn.run(
        app,
        factory=args.workers > 1,
        workers=args.workers,
        host=args.host,
        port=args.port,
        http="httptools",
        h11_max_incomplete_event_size=16 * 1024,
        **UVICORN_OPTIONS,
    )


if __name__ == "__main__":
    main()
