"""The edge's JSON answers: one way to send a body, one way to send an error (`{"error": {"code", "message"}}`)."""

from __future__ import annotations

import orjson
from starlette.responses import Response

from .validation import RequestError

JSON = "application/json"
NO_STORE = {"Cache-Control": "private, no-store"}


def json_response(body: object, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type=JSON, headers=headers)


def error_response(exc: RequestError) -> Response:
    return Response(exc.body(), status_code=exc.status, media_type=JSON, headers=NO_STORE)
