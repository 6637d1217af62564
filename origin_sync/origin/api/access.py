"""The origin's access log (EDGEREC_ACCESS_LOG): aiohttp's access-logger hook writing edgerec.core.access lines,
and the X-Request-Id each answer then carries, so that a caller can find its line."""

from __future__ import annotations

import logging
import os
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from edgerec.core.access import ACCESS_LOGGER, AccessLog, query_names

from .errors import Handler

REQUEST_ID_HEADER = "X-Request-Id"


def access_logger(rate: float) -> type[AbstractAccessLogger]:
    """The class aiohttp's runner makes its access logger from (it is handed a class, not an instance)."""
    lines = AccessLog(rate)

    class OriginAccessLogger(AbstractAccessLogger):
        def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
            if lines.sampled():
                lines.write(
                    request.method,
                    request.path,
                    query_names(request.query_string),
                    response.status,
                    time,
                    response.content_length if response.content_length is not None else response.body_length,
                    response.headers.get(REQUEST_ID_HEADER),
                )

    return OriginAccessLogger


@web.middleware
async def request_ids(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Outermost, with the access log on: every answer, errors included, carries a fresh request id."""
    response = await handler(request)
    response.headers[REQUEST_ID_HEADER] = os.urandom(8).hex()
    return response


def runner_options(rate: float) -> dict[str, Any]:
    """The AppRunner's access-log options: none at all when the log is off."""
    if rate <= 0:
        return {"access_log": None}
    # aiohttp wants a logger beside the class; the lines themselves go to stderr (edgerec.core.access).
    return {"access_log": logging.getLogger(ACCESS_LOGGER), "access_log_class": access_logger(rate)}
