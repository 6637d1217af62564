"""The origin's HTTP service (aiohttp): admin API for offers and models, sync API (snapshot, long-poll deltas, blobs).

Every snapshot and delta batch leaves signed (see protocol.seal); edges authenticate with per-region tokens.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
import time
from collections import OrderedDict
from typing import Any, Awaitable, Callable

import orjson
from aiohttp import web

from edgerec.core.ratelimit import RateLimiter, make_limiter, retry_after
from edgerec.core.tls import (
    CertificateReloader,
    peer_certificate,
    regions_in_certificate,
)
from origin_sync.origin.analysis import build_report
from origin_sync.origin.config import ConfigError, OriginConfig, load_credentials
from origin_sync.origin.credentials import (
    SCOPE_CATALOG,
    SCOPE_EVENTS,
    SCOPE_EXPERIMENTS,
    SCOPE_KEYS,
    SCOPE_MODELS,
    SCOPE_OPS,
    SCOPE_READ,
    Credentials,
)
from origin_sync.origin.keyring import KeyRing, KeyRingError
from origin_sync.origin.sinks import (
    EventSink,
    open_sink,
    unattributed_feedback,
    unresolved_request_ids,
)
from origin_sync.origin.store import (
    MODEL_ACTIVE,
    PUBLISH_STATES,
    AheadOfOrigin,
    ChangeLogStore,
    Compacted,
    NotFound,
    UnservableModel,
    open_store,
)
from origin_sync.wire import digest
from origin_sync.wire.events import InvalidEvents, decode_batch
from origin_sync.wire.experiments import (
    ExperimentOverlap,
    InvalidExperiment,
    validate_experiment,
)
from origin_sync.wire.fields import parse_regions
from origin_sync.wire.offers import InvalidOffer, patched_offer, validate_offer
from origin_sync.wire.protocol import (
    KEY_ID_HEADER,
    KIND_DELTAS,
    KIND_SNAPSHOT,
    MSGPACK_TYPE,
    PROTOCOL_HEADER,
    PROTOCOL_VERSION,
    SIGNATURE_HEADER,
    ProtocolError,
    unpack,
)
from origin_sync.wire.signing import (
    TRUSTED_KEYS_HEADER,
    Signer,
    blob_signing_bytes,
    is_key_id,
    seal,
)

log = logging.getLogger("edgerec.origin")
audit_log = logging.getLogger("edgerec.audit")

MAX_MODEL_BYTES = 256 * 1024 * 1024
MAX_OFFER_BATCH = 1000  # offers per POST /v1/admin/offers
MERGE_PATCH_TYPE = "application/merge-patch+json"
# A long-poll re-reads the head at least this often, so that writes by another process on a database without
# notifications (SQLite) or a lost notification still wake it.
RECHECK_S = 1.0
READY_TIMEOUT_S = 2.0  # /readyz answers 503 when the store takes longer than this to answer
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

STORE = web.AppKey("store", ChangeLogStore)
CONFIG = web.AppKey("config", OriginConfig)
CHANGES = web.AppKey("changes", "ChangeSignal")
SNAPSHOTS = web.AppKey("snapshots", "SnapshotCache")
SINK = web.AppKey("sink", EventSink)
LIMITS = web.AppKey("limits", dict)
METRICS = web.AppKey("metrics", "OriginMetrics")
KEYRING = web.AppKey("keyring", KeyRing)
CREDENTIALS = web.AppKey("credentials", "CredentialReloader")
READY_STATE = web.AppKey("ready_state", dict)  # {"reason": why /readyz last answered 503, or None}
MAX_AUDIT_PATH = 512
ALL = "*"  # the regions a fleet-wide sync token may sync
# How often the files holding tokens are checked for a change (a rotation); SIGHUP reloads at once.
CREDENTIAL_CHECK_S = 1.0
# The scope an admin path needs (a GET also passes with `read`); the first matching prefix decides.
ADMIN_PATH_SCOPES = (("/v1/admin/offers", SCOPE_CATALOG), ("/v1/admin/models", SCOPE_MODELS),
                     ("/v1/admin/experiments", SCOPE_EXPERIMENTS), ("/v1/admin/events", SCOPE_EVENTS),
                     ("/v1/admin/keys", SCOPE_KEYS), ("/v1/admin/compact", SCOPE_OPS),
                     ("/v1/admin/status", SCOPE_READ), ("/v1/admin/audit", SCOPE_READ))


class ChangeSignal:
    """Wakes every waiting long-poll when a change is committed; spurious wake-ups are harmless."""

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self.closing = False

    def close(self) -> None:
        """At shutdown: answer every waiting long-poll now, so that edges move on instead of holding the exit."""
        self.closing = True
        self.notify()

    def notify(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    async def wait(self, timeout_s: float) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._event.wait(), timeout_s)


class SnapshotCache:
    """Sealed snapshots by (regions, version, signing key id): immutable, so shared by every edge that asks for the
    same one."""

    def __init__(self, size: int = 16) -> None:
        self._items: OrderedDict[tuple[tuple[str, ...], int, str], bytes] = OrderedDict()
        self._size = size

    def get(self, key: tuple[tuple[str, ...], int, str]) -> bytes | None:
        if key in self._items:
            self._items.move_to_end(key)
        return self._items.get(key)

    def put(self, key: tuple[tuple[str, ...], int, str], body: bytes) -> None:
        self._items[key] = body
        while len(self._items) > self._size:
            self._items.popitem(last=False)


def json_response(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


def error(status: int, code: str, message: str) -> web.Response:
    return json_response({"error": {"code": code, "message": message}}, status)


def sealed_response(body: bytes, cacheable: bool = False) -> web.Response:
    return web.Response(body=body, content_type=MSGPACK_TYPE,
                        headers={PROTOCOL_HEADER: str(PROTOCOL_VERSION),
                                 "Cache-Control": "private, max-age=60" if cacheable else "no-store"})


def _presented_token(request: web.Request) -> bytes | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip().encode() if scheme.lower() == "bearer" and token.strip() else None


def fingerprint(token: str | bytes) -> str:
    """A credential's name in logs, metrics keys and the audit log: the first 8 hex digits of its sha256.
    It tells tokens apart (which admin, which token of a rotation) and gives nothing away about them."""
    return hashlib.sha256(token.encode() if isinstance(token, str) else token).hexdigest()[:8]


def _admin_scope(path: str) -> str | None:
    """The scope an admin path needs; None for a path outside every scope (it answers 404 to any admin)."""
    return next((scope for prefix, scope in ADMIN_PATH_SCOPES if path == prefix or path.startswith(prefix + "/")),
                None)


def _trusted_key_ids(request: web.Request) -> frozenset[str] | None:
    """The key ids the edge says it trusts (a hint for choosing the signing key), or None when it says nothing."""
    raw = request.headers.get(TRUSTED_KEYS_HEADER)
    if raw is None:
        return None
    return frozenset(k for k in (p.strip() for p in raw.split(",")[:64]) if is_key_id(k))


def _signer(request: web.Request) -> Signer:
    return request.app[KEYRING].signer_for(_trusted_key_ids(request))


class CredentialReloader:
    """The credentials in force, re-read from their settings on SIGHUP and whenever one of their files changes.

    A reload that fails (unreadable file, bad JSON, short token) keeps the credentials in force, logs why and is
    counted, so that a mistake during a rotation never locks every edge and operator out.
    """

    def __init__(self, credentials: Credentials, metrics: "OriginMetrics") -> None:
        self.current = credentials
        self._metrics = metrics
        self._seen = self._file_states()

    def _file_states(self) -> tuple[tuple[str, float, int] | None, ...]:
        states = []
        for path in self.current.sources:
            try:
                stat = path.stat()
                states.append((str(path), stat.st_mtime, stat.st_size))
            except OSError:
                states.append(None)
        return tuple(states)

    def reload(self, why: str) -> bool:
        try:
            credentials = load_credentials()
        except (ConfigError, OSError) as exc:
            self._metrics.credential_reloads.labels("failed").inc()
            log.error("credentials not reloaded (%s): %s; the previous ones stay in force", why, exc)
            self._seen = self._file_states()
            return False
        self.current = credentials
        self._seen = self._file_states()
        self._metrics.credential_reloads.labels("ok").inc()
        log.info("credentials reloaded (%s): %r", why, credentials)
        return True

    def check_files(self) -> None:
        if self._file_states() != self._seen:
            self.reload("a token file changed")

    async def watching(self, app: web.Application) -> Any:
        """cleanup_ctx: poll the token files, and reload on SIGHUP where the loop can take a signal handler."""
        import signal

        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signal.SIGHUP, self.reload, "SIGHUP")

        async def poll() -> None:
            while True:
                await asyncio.sleep(CREDENTIAL_CHECK_S)
                self.check_files()

        task = asyncio.create_task(poll(), name="edgerec-credentials")
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.remove_signal_handler(signal.SIGHUP)


def _certificate_regions(request: web.Request) -> frozenset[str] | None:
    """The edge regions the connection's verified client certificate names, or None without one."""
    certificate = peer_certificate(request.transport)
    return None if certificate is None else regions_in_certificate(certificate)


class OriginMetrics:
    """The origin's own Prometheus metrics (`GET /metrics`, no auth, on the origin's port)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter

        self.registry = CollectorRegistry(auto_describe=True)
        self.rate_limited = Counter("edgerec_origin_rate_limited_total", "Calls refused with 429 (caller over its "
                                    "rate limit), by endpoint group (admin, sync)", ["endpoint"],
                                    registry=self.registry)
        self.admin_calls = Counter("edgerec_origin_admin_calls_total", "Admin calls audited, by status",
                                   ["status"], registry=self.registry)
        self.credential_reloads = Counter("edgerec_origin_credential_reloads_total",
                                          "Reloads of the token settings (SIGHUP or a changed token file), by result "
                                          "(ok, failed: the previous credentials stayed in force)", ["result"],
                                          registry=self.registry)
        self.audit_failures = Counter("edgerec_origin_audit_write_failures_total",
                                      "Audit entries that could not be stored (the log line was still written)",
                                      registry=self.registry)
        self.unattributed_events = Counter("edgerec_origin_events_unattributed_total",
                                           "Feedback events (click, add_to_cart, purchase) stored with a request_id "
                                           "that no impression stored so far carries, by kind", ["kind"],
                                           registry=self.registry)

    def render(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


def _rate_limited(request: web.Request, group: str, key: str) -> web.Response | None:
    limiter: RateLimiter | None = request.app[LIMITS].get(group)
    if limiter is None:
        return None
    wait = limiter.check(key)
    if not wait:
        return None
    request.app[METRICS].rate_limited.labels(group).inc()
    seconds = retry_after(wait)
    response = error(429, "rate_limited", f"too many {group} calls from this caller; retry in {seconds} s")
    response.headers["Retry-After"] = str(seconds)
    return response


async def _audit(request: web.Request, actor: str | None, status: int) -> None:
    """One admin call: a JSON line on `edgerec.audit` and a row of the store's audit_log. Never a token: the actor
    is the credential's fingerprint, and the path and ids are the caller's own."""
    target = request.get("audit_target")
    if target is None and request.match_info:
        target = ",".join(f"{k}={v}" for k, v in request.match_info.items())
    entry = {"ts": time.time(), "actor": actor, "method": request.method, "path": request.path[:MAX_AUDIT_PATH],
             "target": target[:MAX_AUDIT_PATH] if target else None, "peer": request.remote, "status": status}
    metrics = request.app[METRICS]
    metrics.admin_calls.labels(str(status)).inc()
    audit_log.info("admin %s %s -> %d by %s from %s", entry["method"], entry["path"], status, actor or "nobody",
                   entry["peer"], extra={"audit": entry})
    try:
        await request.app[STORE].record_audit(entry)
    except Exception:  # noqa: BLE001 - the call is done; the log line above is the record, alert on the counter
        metrics.audit_failures.inc()
        log.exception("could not store the audit entry of %s %s", entry["method"], entry["path"])


async def _dispatch(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except _SyncError as exc:
        return error(exc.status, exc.code, str(exc))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error(exc.status, exc.reason.lower().replace(" ", "_"), exc.reason)
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error(500, "internal", "internal error; see the origin's log")


@web.middleware
async def errors_and_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    credentials = request.app[CREDENTIALS].current
    path = request.path
    if path.startswith("/v1/admin/"):
        presented = _presented_token(request)
        match = credentials.admin_for(presented)
        actor = match[0].actor(match[1]) if match is not None else None
        # Rate-limited before anything else: by credential, and by address for calls without a valid one (guesses).
        limited = _rate_limited(request, "admin", actor or f"peer:{request.remote}")
        if limited is not None:
            return limited
        if actor is None:
            await _audit(request, None, 401)
            return error(401, "unauthorized", "admin calls need 'Authorization: Bearer <admin token>'")
        request["actor"] = actor
        scope = _admin_scope(path)
        if match is not None and not match[0].allows(scope, request.method):
            await _audit(request, actor, 403)
            return error(403, "forbidden_scope", f"this admin credential lacks the {scope!r} scope for "
                                                 f"{request.method} {path[:100]}")
        response = await _dispatch(request, handler)
        await _audit(request, actor, response.status)
        return response
    if path.startswith("/v1/sync/"):
        presented = _presented_token(request)
        scope = credentials.sync_scope(presented)
        key = f"sync:{fingerprint(presented)}" if scope is not None and presented is not None \
            else f"peer:{request.remote}"
        limited = _rate_limited(request, "sync", key)
        if limited is not None:
            return limited
        if scope is None:
            return error(401, "unauthorized", "sync calls need 'Authorization: Bearer <edge sync token>'")
        certified = _certificate_regions(request)
        if certified is not None:
            # Mutual TLS: the token and the client certificate must agree; the edge may sync what both allow.
            allowed = certified if ALL in scope else scope & certified
            if not allowed:
                named = ",".join(sorted(certified)) or "no edge region"
                return error(403, "certificate_mismatch", f"the client certificate names {named}, which this "
                             f"edge token may not sync")
            scope = allowed
        request["sync_scope"] = scope
    return await _dispatch(request, handler)


async def _json_body(request: web.Request) -> Any:
    raw = await request.read()
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise _BadRequest(f"body is not valid JSON: {exc}") from None


class _BadRequest(Exception):
    pass


# -- admin -------------------------------------------------------------------------------------

async def put_offer(request: web.Request) -> web.Response:
    try:
        offer = validate_offer(await _json_body(request), request.match_info["offer_id"])
    except (_BadRequest, InvalidOffer) as exc:
        return error(422 if isinstance(exc, InvalidOffer) else 400, "invalid_offer", str(exc))
    version = await request.app[STORE].upsert_offer(offer)
    log.info("offer %s upserted at version %d", offer["id"], version)
    return json_response({"offer": offer, "data_version": version})


async def patch_offer(request: web.Request) -> web.Response:
    """RFC 7396 merge patch of a stored offer: the members sent replace the stored ones, a null resets one to its
    default (or leaves a required field missing), and the result is validated whole, in the write transaction."""
    if request.content_type != MERGE_PATCH_TYPE:
        return error(415, "unsupported_media_type", f"PATCH takes a JSON merge patch (RFC 7396) with Content-Type: "
                                                    f"{MERGE_PATCH_TYPE}; PUT replaces a whole offer")
    try:
        patch = await _json_body(request)
    except _BadRequest as exc:
        return error(400, "invalid_json", str(exc))
    if not isinstance(patch, dict):
        return error(422, "invalid_offer", "a merge patch of an offer is a JSON object of the fields to change")
    offer_id = request.match_info["offer_id"]
    try:
        version, offer = await request.app[STORE].update_offer(
            offer_id, lambda stored: patched_offer(stored, patch, offer_id))
    except NotFound as exc:
        return error(404, "not_found", str(exc))
    except InvalidOffer as exc:
        return error(422, "invalid_offer", str(exc))
    log.info("offer %s patched (data version %d)", offer_id, version)
    return json_response({"offer": offer, "data_version": version})


async def put_offers(request: web.Request) -> web.Response:
    """Body {"offers": [...]}: up to MAX_OFFER_BATCH whole offers (each with its id) upserted in one transaction.
    Each is validated alone: a refused one is reported and the others are stored. Answers per offer, in order,
    "created", "changed", "unchanged" (equal to the stored one, not written) or "refused" with the reason."""
    try:
        body = await _json_body(request)
    except _BadRequest as exc:
        return error(400, "invalid_json", str(exc))
    offers = body.get("offers") if isinstance(body, dict) else None
    if not isinstance(offers, list) or not 0 < len(offers) <= MAX_OFFER_BATCH:
        return error(422, "invalid_request", f"expected {{\"offers\": [1 to {MAX_OFFER_BATCH} offers]}}")
    request["audit_target"] = f"offers={len(offers)}"
    results: list[dict[str, Any]] = []
    valid: list[dict[str, Any]] = []
    for item in offers:
        oid = item.get("id") if isinstance(item, dict) and isinstance(item.get("id"), str) else None
        try:
            valid.append(validate_offer(item))
            results.append({"id": oid, "status": None})
        except InvalidOffer as exc:
            results.append({"id": oid, "status": "refused", "error": str(exc)})
    version, outcomes = await request.app[STORE].upsert_offers(valid) if valid else \
        ((await request.app[STORE].head()).version, [])
    pending = iter(outcomes)
    for result in results:
        if result["status"] is None:
            result["status"] = next(pending)
    counts = {k: sum(1 for r in results if r["status"] == k) for k in ("created", "changed", "unchanged", "refused")}
    log.info("offer batch: %s (data version %d)", ", ".join(f"{n} {k}" for k, n in counts.items()), version)
    return json_response({"results": results, "counts": counts, "data_version": version})


async def get_offer(request: web.Request) -> web.Response:
    try:
        return json_response({"offer": await request.app[STORE].offer(request.match_info["offer_id"])})
    except NotFound as exc:
        return error(404, "not_found", str(exc))


async def delete_offer(request: web.Request) -> web.Response:
    try:
        version = await request.app[STORE].delete_offer(request.match_info["offer_id"])
    except NotFound as exc:
        return error(404, "not_found", str(exc))
    return json_response({"deleted": request.match_info["offer_id"], "data_version": version})


async def put_experiment(request: web.Request) -> web.Response:
    """Create or replace an experiment; it reaches the edges with the data version answered."""
    try:
        experiment = validate_experiment(await _json_body(request), request.match_info["experiment_id"])
    except (_BadRequest, InvalidExperiment) as exc:
        return error(422 if isinstance(exc, InvalidExperiment) else 400, "invalid_experiment", str(exc))
    try:
        version = await request.app[STORE].upsert_experiment(experiment)
    except NotFound as exc:
        return error(422, "invalid_experiment", f"variants: {exc} (publish the model first)")
    except UnservableModel as exc:
        return error(422, "invalid_experiment", f"variants: {exc}")
    except ExperimentOverlap as exc:
        return error(409, "experiment_overlap", str(exc))
    log.info("experiment %s upserted at version %d", experiment["id"], version)
    return json_response({"experiment": await request.app[STORE].experiment(experiment["id"]),
                          "data_version": version})


async def get_experiment(request: web.Request) -> web.Response:
    try:
        return json_response({"experiment": await request.app[STORE].experiment(request.match_info["experiment_id"])})
    except NotFound as exc:
        return error(404, "not_found", str(exc))


async def list_experiments(request: web.Request) -> web.Response:
    return json_response({"experiments": await request.app[STORE].experiments()})


async def delete_experiment(request: web.Request) -> web.Response:
    try:
        version = await request.app[STORE].delete_experiment(request.match_info["experiment_id"])
    except NotFound as exc:
        return error(404, "not_found", str(exc))
    return json_response({"deleted": request.match_info["experiment_id"], "data_version": version})


async def publish_model(request: web.Request) -> web.Response:
    """Body: msgpack map {"manifest": {...}, "model": <model.onnx bytes>}. Query `state`: `published` (stored,
    served nowhere), `candidate` (an experiment's variant may name it) or `active` (served by every edge); without
    it the model is activated, as every publish did before model states."""
    state = request.query.get("state", MODEL_ACTIVE)
    if state not in PUBLISH_STATES:
        return error(422, "invalid_query", f"state must be one of {', '.join(PUBLISH_STATES)}")
    try:
        payload = unpack(await request.read())
    except ProtocolError as exc:
        return error(400, "invalid_bundle", str(exc))
    if not isinstance(payload, dict) or not isinstance(payload.get("manifest"), dict) \
            or not isinstance(payload.get("model"), bytes):
        return error(422, "invalid_bundle", "expected a msgpack map with 'manifest' (map) and 'model' (bytes)")
    manifest = payload["manifest"]
    if not isinstance(manifest.get("version"), str) or not manifest["version"]:
        return error(422, "invalid_bundle", "manifest.version must be a non-empty string")
    request["audit_target"] = f"model_version={manifest['version']}"
    # The origin refuses a bundle an edge would refuse, so a bad model never reaches the fleet.
    from models.runtime import BundleError, Ranker

    try:
        await asyncio.to_thread(Ranker.from_bytes, payload["model"], manifest)
    except BundleError as exc:
        return error(422, "invalid_bundle", f"bundle rejected: {exc}")
    try:
        version, stored_state = await request.app[STORE].publish_model(manifest, payload["model"], state=state)
    except ValueError as exc:
        return error(409, "conflict", str(exc))
    log.info("model %s published as %s (data version %d)", manifest["version"], stored_state, version)
    return json_response({"model_version": manifest["version"], "state": stored_state, "data_version": version},
                         201)


async def activate_model(request: web.Request) -> web.Response:
    """Activate a published model (roll back). The model already active is a no-op: no change is appended, the data
    version stays, and the answer says so (`changed: false`), so no edge rebuilds for nothing."""
    model_version = request.match_info["model_version"]
    try:
        version, changed = await request.app[STORE].activate_model(model_version)
    except NotFound as exc:
        return error(404, "not_found", str(exc))
    answer: dict[str, Any] = {"model_version": model_version, "data_version": version, "changed": changed}
    if not changed:
        answer["message"] = f"model {model_version} is already active; nothing changed"
    return json_response(answer)


async def list_models(request: web.Request) -> web.Response:
    return json_response({"models": await request.app[STORE].models()})


async def status(request: web.Request) -> web.Response:
    head = await request.app[STORE].head()
    return json_response({"data_version": head.version, "head_hash": head.hash.hex(), "compaction_floor": head.floor,
                          "protocol": PROTOCOL_VERSION, "key_id": request.app[KEYRING].signer.key_id})


async def list_keys(request: web.Request) -> web.Response:
    """The published signing-key set, the active key id and the ids of the private keys this origin holds."""
    return json_response(request.app[KEYRING].describe())


async def _rotation_step(request: web.Request, key_id: object, step: str) -> web.Response:
    """Apply one rotation step to the stored key set and publish it through the change log (signed by the key that
    signs now, so every edge verifies it with a key it already trusts)."""
    if not isinstance(key_id, str) or not is_key_id(key_id):
        return error(422, "invalid_key_id", "key_id: 16 lowercase hex digits (GET /v1/admin/keys lists them)")
    request["audit_target"] = f"key_id={key_id}"
    ring = request.app[KEYRING]
    transition = {"announce": ring.announced, "activate": ring.activated, "revoke": ring.revoked}[step]
    try:
        version, key_set = await request.app[STORE].update_key_set(lambda stored: transition(stored, key_id))
    except KeyRingError as exc:
        return error(exc.status, exc.code, str(exc))
    ring.adopt(key_set)
    log.info("signing key %s: %s at version %d; %s signs", key_id, step, version, ring.signer.key_id)
    return json_response({"key_set": key_set, "active": ring.signer.key_id, "data_version": version})


async def announce_key(request: web.Request) -> web.Response:
    """Body {"key_id": ...}: publish a key the origin holds as `next`, so that edges trust it before it signs."""
    try:
        body = await _json_body(request)
    except _BadRequest as exc:
        return error(400, "invalid_json", str(exc))
    return await _rotation_step(request, body.get("key_id") if isinstance(body, dict) else None, "announce")


async def activate_key(request: web.Request) -> web.Response:
    return await _rotation_step(request, request.match_info["key_id"], "activate")


async def revoke_key(request: web.Request) -> web.Response:
    return await _rotation_step(request, request.match_info["key_id"], "revoke")


async def _follow_key_set(app: web.Application) -> None:
    """Other origin processes on the same database rotate keys too: adopt the stored key set within a second."""
    while True:
        await asyncio.sleep(RECHECK_S)
        try:
            key_set = await app[STORE].key_set()
            if key_set != app[KEYRING].key_set:
                app[KEYRING].adopt(key_set)
                log.info("signing key set changed by another origin process; %s signs", app[KEYRING].signer.key_id)
        except Exception:  # noqa: BLE001 - keep signing with the keys in force; try again
            log.exception("could not adopt the stored signing key set; keeping the one in force")


async def compact(request: web.Request) -> web.Response:
    """Compact now. Query `keep_versions=N` overrides the configured retention (operators, tests)."""
    config = request.app[CONFIG]
    keep = request.query.get("keep_versions")
    if keep is not None:
        if not keep.isdigit():
            return error(422, "invalid_query", "keep_versions must be a non-negative integer")
        floor = await request.app[STORE].compact(keep_versions=int(keep))
    else:
        floor = await request.app[STORE].compact(config.retention_versions, config.retention_seconds)
    log.info("change log compacted: floor at version %d", floor)
    return json_response({"compaction_floor": floor})


def _without_manifests(experiment: dict[str, Any]) -> dict[str, Any]:
    """The experiment with each variant's model ref cut to the model's version and sha256: the manifest (the item
    list and training report, about 150 KB a model) says nothing about the experiment."""
    return {**experiment, "variants": [
        {**v, "model_ref": {"version": v["model_ref"]["version"], "sha256": v["model_ref"]["sha256"]}}
        if v.get("model_ref") else v for v in experiment["variants"]]}


async def experiment_report(request: web.Request) -> web.Response:
    """Per variant: impressions, CTR, conversion, revenue per impression per currency (95% CIs), z-tests,
    sample-ratio check, and the feedback in the experiment's scope that matches no impression (`unattributed`)."""
    try:
        experiment = await request.app[STORE].experiment(request.match_info["experiment_id"])
        counts = await request.app[SINK].experiment_counts(experiment)
    except NotFound as exc:
        return error(404, "not_found", str(exc))
    except NotImplementedError as exc:
        return error(409, "no_queryable_sink", str(exc))
    return json_response({**build_report(experiment, counts), "definition": _without_manifests(experiment)})


async def erase_events(request: web.Request) -> web.Response:
    """Body {"shopper": <pseudonym>}: delete every stored event of one person (GDPR erasure). The caller computes
    the pseudonym from the shopper id with the deployment's key, so the id itself never reaches the origin."""
    try:
        body = await _json_body(request)
    except _BadRequest as exc:
        return error(400, "invalid_json", str(exc))
    shopper = body.get("shopper") if isinstance(body, dict) else None
    if not isinstance(shopper, str) or len(shopper) != 32 or not all(c in "0123456789abcdef" for c in shopper):
        return error(422, "invalid_request", "shopper: the 32-hex-digit pseudonym (edgerec events erase computes it)")
    try:
        erased = await request.app[SINK].erase(shopper)
    except NotImplementedError as exc:
        return error(409, "no_queryable_sink", str(exc))
    log.info("erased %d events of one shopper", erased)
    return json_response({"erased": erased})


# -- sync --------------------------------------------------------------------------------------

class _SyncError(Exception):
    """A sync request that is refused; turned into a JSON error by the middleware."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code = status, code


def _regions(request: web.Request) -> tuple[str, ...]:
    try:
        regions = parse_regions(request.query.get("regions", ""))
    except ValueError as exc:
        raise _SyncError(422, "invalid_query", f"regions: {exc}") from None
    scope = request["sync_scope"]
    if ALL not in scope and not set(regions) <= scope:
        # The region is named (it is in the URL already), never the token.
        raise _SyncError(403, "forbidden_region",
                         f"this edge token may not sync {','.join(sorted(set(regions) - scope))}")
    return regions


def _check_protocol(request: web.Request) -> None:
    sent = request.headers.get(PROTOCOL_HEADER)
    if sent is not None and sent != str(PROTOCOL_VERSION):
        raise _SyncError(409, "protocol_mismatch",
                         f"edge speaks protocol {sent}; this origin speaks {PROTOCOL_VERSION}: upgrade the edge")


def _seal_snapshot(payload: dict[str, Any], regions: tuple[str, ...], signer: Signer) -> bytes:
    # The digest of exactly what the snapshot carries (O(state), once a version: sealed snapshots are cached).
    payload["state_digest"] = digest.state_digest(payload["offers"], payload["model"], payload["experiments"], regions)
    return seal(KIND_SNAPSHOT, payload, signer)


async def snapshot(request: web.Request) -> web.Response:
    _check_protocol(request)
    regions = _regions(request)
    store, cache = request.app[STORE], request.app[SNAPSHOTS]
    head = await store.head_version()
    signer = _signer(request)
    body = cache.get((regions, head, signer.key_id))
    if body is None:
        snap = await store.snapshot(regions)
        payload = {"regions": list(regions), "issued_at": time.time(), **snap}
        body = await asyncio.to_thread(_seal_snapshot, payload, regions, signer)
        cache.put((regions, snap["version"], signer.key_id), body)
    return sealed_response(body)


async def deltas(request: web.Request) -> web.Response:
    """Long-poll: answer at once if anything changed after `since`, else wait up to `wait` seconds."""
    _check_protocol(request)
    regions = _regions(request)
    try:
        since = int(request.query.get("since", ""))
        wait = min(float(request.query.get("wait", "0")), request.app[CONFIG].max_wait_s)
    except ValueError:
        return error(422, "invalid_query", "since must be an integer version and wait a number of seconds")
    if since < 0:
        return error(422, "invalid_query", "since must be >= 0")
    store, changes = request.app[STORE], request.app[CHANGES]
    deadline = time.monotonic() + max(wait, 0.0)
    while not changes.closing and (await store.head_version()) <= since \
            and (remaining := deadline - time.monotonic()) > 0:
        await changes.wait(min(remaining, RECHECK_S))
    try:
        page = await store.changes_since(since, regions)
    except AheadOfOrigin as exc:
        return error(409, "ahead_of_origin", str(exc))
    except Compacted as exc:
        return error(410, "compacted", str(exc))
    payload = {"regions": list(regions), "from": page.since, "from_hash": page.from_hash, "to": page.to,
               "to_hash": page.to_hash, "head": page.head, "issued_at": time.time(), "changes": page.changes}
    if page.state_digest is not None:
        payload["state_digest"] = page.state_digest
    return sealed_response(seal(KIND_DELTAS, payload, _signer(request)))


async def ingest_events(request: web.Request) -> web.Response:
    """An edge's event batch (msgpack, see events.encode_batch). Idempotent: a batch id seen before is acknowledged
    again without storing anything; the edge deletes its segment only after this answer."""
    try:
        batch_id, regions, events = await asyncio.to_thread(decode_batch, await request.read())
    except InvalidEvents as exc:
        return error(422, "invalid_events", str(exc))
    scope = request["sync_scope"]
    if ALL not in scope and not set(regions) <= scope:
        return error(403, "forbidden_region",
                     f"this edge token may not send events of {','.join(sorted(set(regions) - scope))}")
    # Scoped by the regions, so that one region's token can never shadow another region's batch.
    fresh = await request.app[SINK].write_batch(f"{','.join(sorted(regions))}/{batch_id}", events)
    if fresh:
        await _count_unattributed(request.app, events)
    return json_response({"batch_id": batch_id, "events": len(events), "duplicate": not fresh})


async def _count_unattributed(app: web.Application, events: list[dict[str, Any]]) -> None:
    """Count the feedback of a stored batch whose request_id no impression carries, neither in the batch nor stored
    before it (one indexed look-up per batch, for the ids the batch itself does not explain). An edge spools an
    impression before its answer leaves, so feedback through the same worker always arrives after it; feedback that
    reached another worker or replica may arrive before its impression and is counted too. The report's
    `unattributed` is computed when it is read, so it is exact for the events stored by then."""
    unresolved = unresolved_request_ids(events)
    if not unresolved:
        return
    try:
        known = await app[SINK].stored_impressions(unresolved)
    except NotImplementedError:  # no SQL sink (NATS only): nothing to look impressions up in
        return
    except Exception:  # noqa: BLE001 - the batch is stored and acknowledged; only the count is missing
        log.exception("could not look up the impressions of an event batch; its unattributed feedback is not counted")
        return
    for kind, n in unattributed_feedback(events, known).items():
        app[METRICS].unattributed_events.labels(kind).inc(n)


_BLOB_SIGNATURES: dict[tuple[str, str], str] = {}


def _blob_signature(signer: Signer, sha256: str) -> str:
    key = (signer.key_id, sha256)
    if key not in _BLOB_SIGNATURES:
        _BLOB_SIGNATURES[key] = base64.b64encode(signer.sign(blob_signing_bytes(sha256))).decode()
    return _BLOB_SIGNATURES[key]


async def blob(request: web.Request) -> web.StreamResponse:
    sha = request.match_info["sha256"]
    try:
        path = await request.app[STORE].blob_path(sha)
    except NotFound as exc:
        return error(404, "not_found", str(exc))
    signer = _signer(request)
    # Content-addressed, so immutable: any HTTP cache may keep it forever. The signature covers the address.
    return web.FileResponse(path, headers={"Cache-Control": "public, max-age=31536000, immutable",
                                           "Content-Type": "application/octet-stream",
                                           SIGNATURE_HEADER: _blob_signature(signer, sha),
                                           KEY_ID_HEADER: signer.key_id})


async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Ready (200) when the store answers a cheap query (its head) within READY_TIMEOUT_S and a signing key is
    loaded; else 503 `{"ready": false, "reason": ...}`. No auth, like /healthz, so the reason names the failure's
    kind only; the origin's log has its details (once per change to not ready, not on every probe)."""
    reason, detail = None, None
    try:
        signer = request.app[KEYRING].signer
    except Exception as exc:  # noqa: BLE001 - e.g. a key set whose active key this origin does not hold
        reason, detail = "no signing key loaded", f"{type(exc).__name__}: {exc}"
    else:
        try:
            head = await asyncio.wait_for(request.app[STORE].head(), READY_TIMEOUT_S)
        except asyncio.TimeoutError:
            reason = detail = f"store: no answer within {READY_TIMEOUT_S:g} s"
        except Exception as exc:  # noqa: BLE001 - whatever the database says, the origin cannot serve without it
            reason, detail = f"store: {type(exc).__name__}", f"{type(exc).__name__}: {exc}"
    state = request.app[READY_STATE]
    if reason != state.get("reason"):
        if reason is None:
            log.info("origin ready again")
        else:
            log.warning("origin not ready: %s", detail)
        state["reason"] = reason
    if reason is not None:
        return json_response({"ready": False, "reason": reason}, 503)
    return json_response({"ready": True, "data_version": head.version, "key_id": signer.key_id})


async def metrics_endpoint(request: web.Request) -> web.Response:
    return web.Response(body=request.app[METRICS].render(),
                        headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})


async def read_audit(request: web.Request) -> web.Response:
    """The newest audit entries (`limit`, default 100, at most 1000), newest first."""
    raw = request.query.get("limit", "100")
    if not raw.isdigit() or not 1 <= int(raw) <= 1000:
        return error(422, "invalid_query", "limit must be an integer from 1 to 1000")
    return json_response({"entries": await request.app[STORE].audit_log(int(raw))})


async def _compact_periodically(app: web.Application) -> None:
    config = app[CONFIG]
    while True:
        await asyncio.sleep(config.compact_interval_s)
        try:
            if config.retention_versions is not None or config.retention_seconds is not None:
                await app[STORE].compact(config.retention_versions, config.retention_seconds)
            if config.event_retention_s is not None:
                await app[SINK].purge_before(time.time() - config.event_retention_s)
            if config.audit_retention_s is not None:
                await app[STORE].purge_audit(time.time() - config.audit_retention_s)
        except Exception:  # noqa: BLE001 - compaction is housekeeping: log it, try again later
            log.exception("compaction failed; will retry")


def build_app(config: OriginConfig, store: ChangeLogStore | None = None,
              sink: EventSink | None = None) -> web.Application:
    if config.signer is None:
        raise ValueError("the origin needs a signing key")
    app = web.Application(middlewares=[errors_and_auth], client_max_size=MAX_MODEL_BYTES)
    app[CONFIG] = config
    app[STORE] = store or open_store(config.dsn, config.db_path, config.blob_dir)
    app[SNAPSHOTS] = SnapshotCache()
    app[METRICS] = OriginMetrics()
    app[KEYRING] = KeyRing(config.signers or (config.signer,))
    app[CREDENTIALS] = CredentialReloader(config.credentials, app[METRICS])
    app[LIMITS] = {"admin": make_limiter(config.admin_rate_limit_rps, config.admin_rate_limit_burst),
                   "sync": make_limiter(config.sync_rate_limit_rps, config.sync_rate_limit_burst)}
    app[SINK] = sink or open_sink(config.event_sinks, config.dsn, config.events_db, config.nats_url)
    app[READY_STATE] = {"reason": None}

    async def lifecycle(app: web.Application) -> Any:
        app[CHANGES] = ChangeSignal()
        app[STORE].on_change(app[CHANGES].notify)
        await app[STORE].open()
        await app[SINK].open()
        app[KEYRING].adopt(await app[STORE].key_set())
        tasks = [asyncio.create_task(_compact_periodically(app), name="edgerec-compact"),
                 asyncio.create_task(_follow_key_set(app), name="edgerec-key-set")]
        yield
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await app[SINK].close()
        await app[STORE].close()

    async def on_shutdown(app: web.Application) -> None:
        app[CHANGES].close()

    app.cleanup_ctx.append(lifecycle)
    app.cleanup_ctx.append(app[CREDENTIALS].watching)
    app.on_shutdown.append(on_shutdown)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_endpoint)
    app.router.add_get("/v1/admin/audit", read_audit)
    app.router.add_get("/v1/admin/status", status)
    app.router.add_post("/v1/admin/compact", compact)
    app.router.add_get("/v1/admin/keys", list_keys)
    app.router.add_post("/v1/admin/keys", announce_key)
    app.router.add_post("/v1/admin/keys/{key_id}/activate", activate_key)
    app.router.add_post("/v1/admin/keys/{key_id}/revoke", revoke_key)
    app.router.add_post("/v1/admin/offers", put_offers)
    app.router.add_put("/v1/admin/offers/{offer_id}", put_offer)
    app.router.add_patch("/v1/admin/offers/{offer_id}", patch_offer)
    app.router.add_get("/v1/admin/offers/{offer_id}", get_offer)
    app.router.add_delete("/v1/admin/offers/{offer_id}", delete_offer)
    app.router.add_get("/v1/admin/experiments", list_experiments)
    app.router.add_put("/v1/admin/experiments/{experiment_id}", put_experiment)
    app.router.add_get("/v1/admin/experiments/{experiment_id}", get_experiment)
    app.router.add_get("/v1/admin/experiments/{experiment_id}/report", experiment_report)
    app.router.add_post("/v1/admin/events/erase", erase_events)
    app.router.add_delete("/v1/admin/experiments/{experiment_id}", delete_experiment)
    app.router.add_get("/v1/admin/models", list_models)
    app.router.add_post("/v1/admin/models", publish_model)
    app.router.add_post("/v1/admin/models/{model_version}/activate", activate_model)
    app.router.add_get("/v1/sync/snapshot", snapshot)
    app.router.add_get("/v1/sync/deltas", deltas)
    app.router.add_get("/v1/sync/blobs/{sha256}", blob)
    app.router.add_post("/v1/sync/events", ingest_events)
    return app


def serve(config: OriginConfig) -> None:
    import uvloop

    app = build_app(config)
    ssl_context = None
    if config.tls is not None:
        # The listener keeps this context; a renewed certificate goes into a new one that its SNI callback hands out.
        ssl_context = config.tls.context()
        reloader = CertificateReloader(ssl_context, config.tls.cert_file, config.tls.key_file,
                                       config.tls.reload_interval_s, factory=config.tls.context)
        app.cleanup_ctx.append(reloader.running)
    log.info("origin listening on %s://%s:%d (%s, signing key %s%s)", "https" if ssl_context else "http",
             config.host, config.port, "postgresql" if config.dsn else f"sqlite {config.db_path}",
             config.signer.key_id if config.signer else None,
             ", client certificates required" if config.tls and config.tls.require_client_cert else "")
    web.run_app(app, host=config.host, port=config.port, print=None, ssl_context=ssl_context,
                access_log=None, loop=uvloop.new_event_loop(), handle_signals=True)
