"""The one place that turns errors into responses: every origin error is JSON `{"error": {"code", "message"}}`,
whether a handler refused the call (ApiError, or the store's NotFound: 404), aiohttp answered on its own (unknown
route, wrong method, body too large), or the request was not even HTTP."""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any, Awaitable, Callable

import orjson
from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from edgerec.core.files import NotFound

log = logging.getLogger("edgerec.origin")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
MAX_MESSAGE_CHARS = 300  # a message may quote the caller's own input: bounded, one line


class ApiError(Exception):
    """A refused call: its status, a stable machine code and a message for the caller (never a secret)."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.headers = status, code, headers or {}


def json_response(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    message = " ".join(message.split())[:MAX_MESSAGE_CHARS]
    response = json_response({"error": {"code": code, "message": message}}, status)
    response.headers.update(headers or {})
    if status == 413:  # the rest of a body too large is not worth reading: answer, then close
        response.force_close()
    return response


# aiohttp's own answers, by status: the code the caller sees (the message says more).
_HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    415: "unsupported_media_type",
    417: "expectation_failed",
    431: "header_too_large",
}


def _code(status: int) -> str:
    if status in _HTTP_CODES:
        return _HTTP_CODES[status]
    try:
        return HTTPStatus(status).phrase.lower().replace(" ", "_").replace("-", "_")
    except ValueError:
        return "error"


def _http_exception_response(request: web.BaseRequest, exc: web.HTTPException) -> web.Response:
    """aiohttp's own 4xx (raised by its router, its body reading, its Expect handling) in our format; the headers
    it carries (Allow of a 405) stay."""
    headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after")}
    if exc.status == 404:
        message = f"no route for {request.method} {request.path[:100]}"
        if request.path.endswith("/") and request.path != "/":
            message += f" (paths take no trailing slash: {request.path.rstrip('/')[:100]})"
    elif exc.status == 405:
        message = f"{request.method} is not allowed on {request.path[:100]}; allowed: {headers.get('Allow', '')}"
    else:
        message = exc.text if exc.text and not exc.text.startswith(f"{exc.status}:") else exc.reason
    return error_response(exc.status, _code(exc.status), message or exc.reason, headers)


def response_for(request: web.BaseRequest, exc: BaseException) -> web.StreamResponse:
    """The response an exception raised while serving `request` becomes (redirects are left to aiohttp)."""
    if isinstance(exc, ApiError):
        return error_response(exc.status, exc.code, str(exc), exc.headers)
    if isinstance(exc, NotFound):  # what the call names (an offer, an experiment, a model, a blob) is not stored
        return error_response(404, "not_found", str(exc))
    if isinstance(exc, web.HTTPException):
        if exc.status < 400:
            raise exc
        return _http_exception_response(request, exc)
    log.error("unhandled error on %s %s", request.method, request.path, exc_info=exc)
    return error_response(500, "internal", "internal error; see the origin's log")


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Outermost middleware: whatever a handler (or aiohttp's router) raises leaves as a JSON error."""
    try:
        return await handler(request)
    except Exception as exc:  # noqa: BLE001 - the one place every error becomes a response
        return response_for(request, exc)


class JsonErrorRequestHandler(RequestHandler):
    """aiohttp's connection handler, answering in our format where aiohttp would answer text/plain on its own: a
    request that is not HTTP (400), and an error that escaped every middleware. aiohttp has no hook for these
    (aio-libs/aiohttp#3287), hence the subclass."""

    __slots__ = ()

    def handle_error(
        self, request: web.BaseRequest, status: int = 500, exc: BaseException | None = None, message: str | None = None
    ) -> web.StreamResponse:
        if status >= 500:
            log.error("error handling a request from %s", request.remote, exc_info=exc)
        else:  # the client's mistake (or a scanner's): worth a line, not a traceback
            log.info("malformed request from %s: %s", request.remote, message or exc)
        if request.writer.output_size > 0:
            raise ConnectionError("a response was partly sent already; the connection is closed")
        if status >= 500:
            response = error_response(
                status,
                "internal" if status == 500 else _code(status),
                "internal error; see the origin's log" if status == 500 else HTTPStatus(status).phrase,
            )
        else:
            response = error_response(status, "bad_request", f"not a valid HTTP request: {message or exc}")
        response.force_close()
        return response

    async def finish_response(
        self, request: web.BaseRequest, resp: web.StreamResponse, start_time: float | None
    ) -> tuple[web.StreamResponse, bool]:
        if isinstance(resp, web.HTTPException) and resp.status >= 400:  # raised outside every middleware
            resp = _http_exception_response(request, resp)
        return await super().finish_response(request, resp, start_time)


class JsonErrorServer(web.Server):
    """aiohttp's low-level server, making JsonErrorRequestHandler connections."""

    def __call__(self) -> RequestHandler:
        return JsonErrorRequestHandler(self, loop=self._loop, **self._kwargs)


class JsonErrorRunner(web.AppRunner):
    """An AppRunner whose server answers protocol errors in our format."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        # Same object, our subclass: it only changes which connection handler it makes.
        server.__class__ = JsonErrorServer
        return server
