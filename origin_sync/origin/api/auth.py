"""Who may call what: admin bearer tokens and their scopes, edge sync tokens and the regions they may sync (with a
client certificate, what both allow), and the rate limits per credential, checked before any handler runs."""

from __future__ import annotations

import hashlib

from aiohttp import web

from edgerec.core.ratelimit import retry_after
from edgerec.core.tls import peer_certificate, regions_in_certificate
from origin_sync.origin.credentials import (
    SCOPE_CATALOG,
    SCOPE_EVENTS,
    SCOPE_EXPERIMENTS,
    SCOPE_KEYS,
    SCOPE_MODELS,
    SCOPE_OPS,
    SCOPE_READ,
)

from .audit import audit
from .errors import ApiError, Handler, response_for
from .state import CREDENTIALS, LIMITS, METRICS

ALL = "*"  # the regions a fleet-wide sync token may sync
# The scope an admin path needs (a GET also passes with `read`); the first matching prefix decides.
ADMIN_PATH_SCOPES = (
    ("/v1/admin/offers", SCOPE_CATALOG),
    ("/v1/admin/models", SCOPE_MODELS),
    ("/v1/admin/experiments", SCOPE_EXPERIMENTS),
    ("/v1/admin/events", SCOPE_EVENTS),
    ("/v1/admin/pipeline", SCOPE_MODELS),
    ("/v1/admin/profiles", SCOPE_EVENTS),  # shoppers' data, as their events are
    ("/v1/admin/keys", SCOPE_KEYS),
    ("/v1/admin/compact", SCOPE_OPS),
    ("/v1/admin/status", SCOPE_READ),
    ("/v1/admin/audit", SCOPE_READ),
)


def presented_token(request: web.Request) -> bytes | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip().encode() if scheme.lower() == "bearer" and token.strip() else None


def fingerprint(token: str | bytes) -> str:
    """A credential's name in logs, metrics keys and the audit log: the first 8 hex digits of its sha256.
    It tells tokens apart (which admin, which token of a rotation) and gives nothing away about them."""
    return hashlib.sha256(token.encode() if isinstance(token, str) else token).hexdigest()[:8]


def admin_scope(path: str) -> str | None:
    """The scope an admin path needs; None for a path outside every scope (it answers 404 to any admin)."""
    return next((scope for prefix, scope in ADMIN_PATH_SCOPES if path == prefix or path.startswith(prefix + "/")), None)


def certificate_regions(request: web.Request) -> frozenset[str] | None:
    """The edge regions the connection's verified client certificate names, or None without one."""
    certificate = peer_certificate(request.transport)
    return None if certificate is None else regions_in_certificate(certificate)


def require_regions(request: web.Request, regions: tuple[str, ...] | list[str], what: str) -> None:
    """403 unless the caller's sync scope covers every region; the regions are named (never the token)."""
    scope: frozenset[str] = request["sync_scope"]
    if ALL not in scope and not set(regions) <= scope:
        raise ApiError(
            403, "forbidden_region", f"this edge token may not {what} {','.join(sorted(set(regions) - scope))}"
        )


def check_rate(request: web.Request, group: str, key: str) -> None:
    """429 with Retry-After once `key` is over its group's rate; by credential, or by address without a valid one."""
    limiter = request.app[LIMITS].get(group)
    wait = limiter.check(key) if limiter is not None else 0.0
    if wait:
        request.app[METRICS].rate_limited.labels(group).inc()
        seconds = retry_after(wait)
        raise ApiError(
            429,
            "rate_limited",
            f"too many {group} calls from this caller; retry in {seconds} s",
            {"Retry-After": str(seconds)},
        )


async def _admin(request: web.Request, handler: Handler) -> web.StreamResponse:
    match = request.app[CREDENTIALS].current.admin_for(presented_token(request))
    actor = match[0].actor(match[1]) if match is not None else None
    # Rate-limited before anything else: by credential, and by address for calls without a valid one (guesses).
    check_rate(request, "admin", actor or f"peer:{request.remote}")
    if match is None or actor is None:
        await audit(request, None, 401)
        raise ApiError(401, "unauthorized", "admin calls need 'Authorization: Bearer <admin token>'")
    request["actor"] = actor
    scope = admin_scope(request.path)
    if not match[0].allows(scope, request.method):
        await audit(request, actor, 403)
        raise ApiError(
            403,
            "forbidden_scope",
            f"this admin credential lacks the {scope!r} scope for {request.method} {request.path[:100]}",
        )
    try:
        response = await handler(request)
    except Exception as exc:  # noqa: BLE001 - turned into its response here, so that the audit has its status
        response = response_for(request, exc)
    await audit(request, actor, response.status)
    return response


def _sync(request: web.Request) -> None:
    presented = presented_token(request)
    scope = request.app[CREDENTIALS].current.sync_scope(presented)
    key = f"sync:{fingerprint(presented)}" if scope is not None and presented is not None else f"peer:{request.remote}"
    check_rate(request, "sync", key)
    if scope is None:
        raise ApiError(401, "unauthorized", "sync calls need 'Authorization: Bearer <edge sync token>'")
    certified = certificate_regions(request)
    if certified is not None:
        # Mutual TLS: the token and the client certificate must agree; the edge may sync what both allow.
        allowed = certified if ALL in scope else scope & certified
        if not allowed:
            named = ",".join(sorted(certified)) or "no edge region"
            raise ApiError(
                403, "certificate_mismatch", f"the client certificate names {named}, which this edge token may not sync"
            )
        scope = allowed
    request["sync_scope"] = scope


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Admin paths need an admin credential with the path's scope (every call audited); sync paths an edge token."""
    if request.path.startswith("/v1/admin/"):
        return await _admin(request, handler)
    if request.path.startswith("/v1/sync/"):
        _sync(request)
    return await handler(request)
