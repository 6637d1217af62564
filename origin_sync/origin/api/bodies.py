"""Reading request bodies with a size bound, and as JSON: a body too large is a 413, bad JSON a 400."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from .errors import ApiError

MAX_JSON_BYTES = 16 * 1024 * 1024  # an admin JSON body (a batch of 1000 offers is well under 1 MiB)
MAX_UPLOAD_BYTES = 256 * 1024 * 1024  # a model bundle, an edge's event batch
_CHUNK = 64 * 1024


async def read_body(request: web.Request, limit: int) -> bytes:
    """The whole body, refused with 413 as soon as it is known to exceed `limit`: from its Content-Length before
    a byte is read, else (chunked) once that much has arrived."""
    declared = request.content_length
    if declared is not None and declared > limit:
        raise ApiError(413, "body_too_large", f"the body ({declared} bytes) is over this endpoint's {limit} bytes")
    body = bytearray()
    async for chunk in request.content.iter_chunked(_CHUNK):
        body += chunk
        if len(body) > limit:
            raise ApiError(413, "body_too_large", f"the body is over this endpoint's {limit} bytes")
    return bytes(body)


async def read_json(request: web.Request, limit: int = MAX_JSON_BYTES) -> Any:
    raw = await read_body(request, limit)
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, "invalid_json", f"body is not valid JSON: {exc}") from None
