"""`GET /openapi.json`: the OpenAPI 3.1 document of the origin, generated from its router and from the msgspec
Structs that check the requests (schemas.py, the wire format) and shape the answers (answers.py). Each handler
says what it takes and answers with `@documented(...)`; a route without it fails the build of the document."""

from __future__ import annotations

from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Callable, TypeVar

import msgspec
import orjson
from aiohttp import web

from origin_sync.wire.fields import Id
from origin_sync.wire.protocol import MSGPACK_TYPE, PROTOCOL_HEADER, PROTOCOL_VERSION
from origin_sync.wire.signing import TRUSTED_KEYS_HEADER

from .answers import ErrorBody
from .auth import admin_scope

JSON = "application/json"
TEXT = "text/plain"
BINARY = "application/octet-stream"
F = TypeVar("F", bound=Callable[..., Any])
_REF = "#/components/schemas/{name}"


@dataclass(frozen=True)
class Operation:
    """What one route takes and answers. `answer` is a Struct of the JSON answer, None for another media type
    (`answer_type`); `errors` adds the statuses this handler refuses with to those every route of its kind has
    (auth, rate limits, bodies, queries); `answers` adds other statuses with their own answer Struct."""

    summary: str
    answer: Any = None
    status: int = 200
    answer_type: str = JSON
    body: Any = None
    body_type: str = JSON
    query: Any = None
    path: dict[str, Any] = field(default_factory=dict)  # a path parameter's type, when it is not an Id
    errors: tuple[int, ...] = ()
    answers: dict[int, Any] = field(default_factory=dict)
    description: str | None = None
    headers: dict[str, dict[str, Any]] = field(default_factory=dict)  # answer headers at `status`


def documented(summary: str, **details: Any) -> Callable[[F], F]:
    """Mark a handler with its Operation, which /openapi.json reads from the router."""

    def mark(handler: F) -> F:
        handler.__openapi__ = Operation(summary, **details)  # type: ignore[attr-defined]
        return handler

    return mark


_RETRY_AFTER = {"Retry-After": {"description": "seconds to wait", "schema": {"type": "integer", "minimum": 1}}}
_ERROR_WHY = {
    400: "Not valid HTTP, or a body that is not JSON (bad_request, invalid_json, invalid_bundle)",
    401: "No valid token (unauthorized)",
    403: "The credential does not cover this call (forbidden_scope, forbidden_region, certificate_mismatch)",
    404: "No such route or object (not_found, unknown_key)",
    409: "In conflict with the stored state",
    410: "The change log was compacted past `since`: take a snapshot (compacted)",
    413: "The body is over this endpoint's bound (body_too_large)",
    415: "Another content type than the one documented (unsupported_media_type)",
    422: "A body, query or path parameter that breaks its schema; the message names the field",
    429: "Over the rate limit of this credential or address (rate_limited); retry after Retry-After seconds",
}
_SECURITY = {
    "adminToken": {
        "type": "http",
        "scheme": "bearer",
        "description": "An admin token (EDGEREC_ADMIN_TOKEN, or one of EDGEREC_ADMIN_TOKENS with its scopes)",
    },
    "syncToken": {
        "type": "http",
        "scheme": "bearer",
        "description": "An edge region's sync token (EDGEREC_REGION_TOKENS)",
    },
}


def _inline(schema_type: Any) -> dict[str, Any]:
    """The JSON schema of a type that needs no components (a constrained string, an integer)."""
    schema = msgspec.json.schema(schema_type)
    schema.pop("$defs", None)
    return schema


def _query_parameters(query: Any) -> list[dict[str, Any]]:
    (component,) = msgspec.json.schema_components([query], ref_template=_REF)[1].values()
    required = set(component.get("required", ()))
    return [
        {"name": name, "in": "query", "required": name in required, "schema": schema}
        for name, schema in component["properties"].items()
    ]


def _content(media_type: str, schema_type: Any, refs: list[Any]) -> dict[str, Any]:
    if schema_type is None:
        schema: dict[str, Any] = {"type": "string"} if media_type == TEXT else {}
        if media_type == BINARY:
            schema = {"type": "string", "contentMediaType": BINARY}
        return {media_type: {"schema": schema}}
    refs.append(schema_type)
    return {media_type: {"schema": {"$ref": _REF.format(name=schema_type.__name__)}}}


def _error(status: int, refs: list[Any]) -> dict[str, Any]:
    answer = {
        "description": _ERROR_WHY.get(status, HTTPStatus(status).phrase),
        "content": _content(JSON, ErrorBody, refs),
    }
    if status == 429:
        answer["headers"] = _RETRY_AFTER
    return answer


def _operation(method: str, path: str, op: Operation, refs: list[Any]) -> dict[str, Any]:
    admin, sync = path.startswith("/v1/admin/"), path.startswith("/v1/sync/")
    errors = {400, *op.errors}
    parameters = [
        {"name": name, "in": "path", "required": True, "schema": _inline(op.path.get(name, Id))}
        for name in _path_names(path)
    ]
    if parameters:
        errors.add(404)
    if op.query is not None:
        parameters += _query_parameters(op.query)
        errors.add(422)
    if admin or sync:
        errors |= {401, 403, 429}
    if sync:
        errors.add(409)  # protocol_mismatch
        parameters += [
            {"name": PROTOCOL_HEADER, "in": "header", "required": False, "schema": {"enum": [str(PROTOCOL_VERSION)]}},
            {
                "name": TRUSTED_KEYS_HEADER,
                "in": "header",
                "required": False,
                "description": "the signing key ids the edge trusts, comma-separated (a hint for the key to sign with)",
                "schema": {"type": "string", "pattern": r"^[0-9a-f]{16}(,[0-9a-f]{16})*$"},
            },
        ]
    description = op.description or ""
    if admin:
        scope = admin_scope(path)
        description += f"\n\nScope: `{scope}`" + (" (or `read`)." if method == "get" else ".")
    answer = {"description": HTTPStatus(op.status).phrase, "content": _content(op.answer_type, op.answer, refs)}
    if op.headers:
        answer["headers"] = op.headers
    responses: dict[str, Any] = {str(op.status): answer}
    for status, schema_type in op.answers.items():
        responses[str(status)] = {
            "description": HTTPStatus(status).phrase,
            "content": _content(JSON, schema_type, refs),
        }
    if op.body is not None:
        errors |= {413, 422}
    responses.update({str(status): _error(status, refs) for status in sorted(errors)})
    document: dict[str, Any] = {"summary": op.summary, "operationId": f"{method}_{_slug(path)}"}
    if description.strip():
        document["description"] = description.strip()
    if parameters:
        document["parameters"] = parameters
    if op.body is not None:
        document["requestBody"] = {"required": True, "content": _content(op.body_type, op.body, refs)}
    document["responses"] = responses
    if admin or sync:
        document["security"] = [{"adminToken" if admin else "syncToken": []}]
    return document


def _path_names(path: str) -> list[str]:
    return [part[1:-1] for part in path.split("/") if part.startswith("{") and part.endswith("}")]


def _slug(path: str) -> str:
    return "_".join(part.strip("{}") for part in path.strip("/").split("/")).replace(".", "_") or "root"


def build_openapi(router: web.UrlDispatcher) -> dict[str, Any]:
    """The document of every route of `router` (HEAD, which aiohttp adds to each GET, goes unsaid)."""
    paths: dict[str, dict[str, Any]] = {}
    refs: list[Any] = []
    for route in router.routes():
        if route.method == "HEAD":
            continue
        path = route.resource.canonical if route.resource is not None else ""
        op = getattr(route.handler, "__openapi__", None)
        if op is None:
            raise ValueError(f"{route.method} {path} has no @documented operation")
        paths.setdefault(path, {})[route.method.lower()] = _operation(route.method.lower(), path, op, refs)
    _, components = msgspec.json.schema_components(list(dict.fromkeys(refs)), ref_template=_REF)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "edgerec origin",
            "version": str(PROTOCOL_VERSION),
            "description": "The admin API (offers, models, experiments, signing keys, events, operations), the sync "
            "API the edges call (snapshot, long-polled deltas, model blobs, event batches; msgpack bodies, signed "
            'payloads: docs/sync.md) and the probes. Every error is JSON {"error": {"code", "message"}}.',
        },
        "paths": dict(sorted(paths.items())),
        "components": {"schemas": components, "securitySchemes": _SECURITY},
    }


OPENAPI = web.AppKey("openapi", bytes)


@documented("This document: the OpenAPI 3.1 description of the origin")
async def openapi_json(request: web.Request) -> web.Response:
    return web.Response(body=request.app[OPENAPI], content_type=JSON)


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/openapi.json", openapi_json)


def publish(app: web.Application) -> None:
    """Build the document once every route is added (a route without its Operation fails here, at start)."""
    app[OPENAPI] = orjson.dumps(build_openapi(app.router))


__all__ = ["BINARY", "JSON", "MSGPACK_TYPE", "TEXT", "Operation", "add_routes", "build_openapi", "documented"]
