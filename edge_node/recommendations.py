"""`/v1/recommendations` as a raw ASGI endpoint that runs the walk of edge_node.serving: one pass over headers, one
body read, no per-offer Python beyond the k answers, cached anonymous answers, an impression for every answer."""

from __future__ import annotations

import logging
import os
import time
from typing import Any, Awaitable, Callable
from urllib.parse import parse_qs

from cachetools import TTLCache

from edgerec.core.ratelimit import RateLimiter
from edgerec.core.tracing import DISABLED, Tracing

from .batching import InferenceBatcher, ModelBreaker
from .cdn import (
    UNTRUSTED_REFUSE,
    CdnPolicy,
    ViewerInfo,
    etag_for,
    etag_matches,
    public_headers,
    read_viewer,
)
from .events import EventRecorder
from .limits import HOLD_HEAD
from .metrics import EdgeMetrics
from .rules import Rules
from .serving import (
    Answer,
    ShopperContext,
    candidates,
    find_profile,
    rank,
    render,
    resolve_region,
    score,
    shopper_context,
)
from .shoppers import ShopperProfiles
from .state import EdgeState, StateHolder
from .traces import AnswerTrace
from .validation import (
    RateLimited,
    RecommendationRequest,
    RequestError,
    parse_anonymous_query,
    parse_recommendation_request,
)

log = logging.getLogger("edgerec.edge")

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

JSON_TYPES = (b"application/json", b"text/plain", b"")
PRIVATE = (b"cache-control", b"private, no-store")
CONTENT_JSON = (b"content-type", b"application/json")
ROUTE = "/v1/recommendations"


class RecommendationsEndpoint:
    """POST: personalized answers (never cached). GET: anonymous region-level answers (CDN-cacheable)."""

    def __init__(
        self,
        holder: StateHolder,
        metrics: EdgeMetrics,
        cdn: CdnPolicy,
        rules: Rules,
        max_body_bytes: int,
        max_k: int,
        default_k: int,
        anonymous_cache_size: int = 4096,
        recorder: "EventRecorder | None" = None,
        limiter: "RateLimiter | None" = None,
        profiles: ShopperProfiles | None = None,
        tracing: Tracing = DISABLED,
    ) -> None:
        self.holder = holder
        self.tracing = tracing  # off (DISABLED): no span, no context, one attribute read a request
        self.profiles = profiles  # the shoppers' profile store (its store is None until the edge has started)
        self.limiter = limiter  # per-client token buckets (None: no limit)
        self.recorder = recorder  # records an impression for every answer served
        self.metrics = metrics
        self.cdn = cdn
        self.rules = rules
        # Requests ready in the same pass of the event loop share one ONNX run; the breaker sends them to the
        # fallback for a while after a run over its latency budget.
        self.batcher = InferenceBatcher(
            ModelBreaker(rules.model_budget_ms, rules.breaker_cooldown_s),
            metrics.inference,
            metrics.inference_batch,
            tracing=tracing,
        )
        self.max_body_bytes = max_body_bytes
        self.max_k = max_k
        self.default_k = default_k
        # Anonymous answers per (data version, model, region, k, slot, device); the data version in the key
        # means a sync swap invalidates them at once, the TTL bounds how long campaign windows can lag.
        self.anonymous: TTLCache[tuple[Any, ...], tuple[Any, ...]] = TTLCache(
            maxsize=anonymous_cache_size, ttl=max(1, cdn.s_maxage)
        )
        self._latency = {m: metrics.latency.labels(ROUTE, m) for m in ("POST", "GET", "HEAD", "OTHER")}
        self._cache = {True: metrics.anonymous_cache.labels("hit"), False: metrics.anonymous_cache.labels("miss")}
        self._counters: dict[tuple[str, int], Any] = {}
        self._limited = metrics.rate_limited.labels(ROUTE)

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        method = scope["method"]
        status = 200
        request_id = os.urandom(8).hex()
        trace = AnswerTrace.begin(self.tracing, scope["headers"], method, ROUTE) if self.tracing.enabled else None
        error = None
        try:
            if method not in ("POST", "GET", "HEAD"):
                raise RequestError(405, "method_not_allowed", "use POST (personalized) or GET (anonymous)")
            peer = scope.get("client")
            viewer = read_viewer(scope["headers"], peer[0] if peer else None, self.cdn)
            if self.limiter is not None:
                wait = self.limiter.check(viewer.client_ip)
                if wait:
                    raise RateLimited(wait)
            if viewer.cdn_headers_untrusted and self.cdn.untrusted == UNTRUSTED_REFUSE:
                raise RequestError(
                    403, "untrusted_cdn_headers", "CDN headers without the CDN's shared secret are refused"
                )
            state = self.holder.current
            if state is None:
                raise RequestError(503, "not_ready", "this edge has no data or model yet; retry shortly")
            if method == "POST":
                status, headers, body = await self._personalized(receive, viewer, state, started, request_id, trace)
            else:
                status, headers, body = await self._anonymous(scope, viewer, state, started, request_id, trace)
        except Exception as exc:  # noqa: BLE001 - this endpoint runs outside Starlette's error middleware
            if not isinstance(exc, RequestError):
                log.exception("unhandled error on %s %s", method, ROUTE)
                exc = RequestError(500, "internal", "internal error; see the edge's log")
            status, headers, body, error = exc.status, [CONTENT_JSON, PRIVATE], exc.body(), exc.code
            if status == 405:
                headers.append((b"allow", b"GET, HEAD, POST"))
            elif status == 429:
                headers.append((b"retry-after", str(exc.retry_after).encode()))  # type: ignore[attr-defined]
                self._limited.inc()
        headers.append((b"x-request-id", request_id.encode()))
        if status != 304:
            headers.append((b"content-length", str(len(body)).encode()))
        extensions = scope.get("extensions")
        hold_head = extensions.get(HOLD_HEAD) if extensions else None
        if hold_head is not None:
            hold_head()  # head and body in one write (edge_node.limits)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if method == "HEAD" else body})
        label = method if method in self._latency else "OTHER"
        counter = self._counters.get((label, status))
        if counter is None:  # a label lookup takes a lock and builds a key: keep the children
            counter = self._counters[(label, status)] = self.metrics.requests.labels(ROUTE, label, str(status))
        counter.inc()
        self._latency[label].observe(time.perf_counter() - started)
        if trace is not None:
            trace.end(status, error)

    async def _read_body(self, receive: Receive, declared: bytes | None) -> bytes:
        limit = self.max_body_bytes
        if declared is not None:
            if not declared.isdigit():
                raise RequestError(400, "invalid_header", "Content-Length is not a number")
            if int(declared) > limit:
                raise RequestError(413, "body_too_large", f"request body over {limit} bytes")
        chunks: list[bytes] = []
        size = 0
        while True:
            # No timer here: a body that does not arrive in time gets its 408 from the connection (edge_node.limits),
            # and this read then ends with the disconnect.
            message = await receive()
            if message["type"] == "http.disconnect":
                raise RequestError(400, "client_disconnected", "client went away before sending the body")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise RequestError(413, "body_too_large", f"request body over {limit} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks) if len(chunks) != 1 else chunks[0]

    async def _personalized(
        self,
        receive: Receive,
        viewer: ViewerInfo,
        state: EdgeState,
        started: float,
        request_id: str,
        trace: AnswerTrace | None,
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """The walk of edge_node.serving, step by step, for one shopper; a traced answer also gets the spans of its
        profile read, rule mask, model run and ranking rules (edge_node.traces)."""
        content_type = (viewer.content_type or b"").split(b";")[0].strip().lower()
        if content_type not in JSON_TYPES and not content_type.endswith(b"+json"):
            raise RequestError(415, "unsupported_media_type", "send the request as application/json")
        body = await self._read_body(receive, viewer.content_length)
        request = parse_recommendation_request(body, self.max_k, self.default_k, state.context_length)
        parsed = time.perf_counter()
        region = resolve_region(request.region, viewer.country, state, self.cdn)
        mark = time.time_ns() if trace is not None else 0
        record = await find_profile(request, self.profiles)
        inputs = self.profiles.inputs if self.profiles is not None else None
        context = shopper_context(request, record, state.catalogs[region], inputs)
        if trace is not None:
            mark = trace.step("edge.profile", mark)
        answer = await self._ranked(state, region, request, context, trace, mark, None)
        payload = render(answer, request_id)
        self._observe(answer)
        if self.recorder is not None:
            self.recorder.impression(request_id, answer.fields(), answer.offer_ids, request.shopper_id, request.slot)
        return 200, [CONTENT_JSON, PRIVATE, self._timing(started, parsed, answer.model_s)], payload

    async def _anonymous(
        self,
        scope: dict[str, Any],
        viewer: ViewerInfo,
        state: EdgeState,
        started: float,
        request_id: str,
        trace: AnswerTrace | None,
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """The same walk for a shopper the edge knows nothing about, its answer cached per region between the
        region and the candidates."""
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        request = parse_anonymous_query(query, self.max_k, self.default_k)
        region = resolve_region(request.region, viewer.country, state, self.cdn)
        key = (state.data_version, state.model.version, region, request.k, request.slot, request.device)
        cached: tuple[bytes, str, dict[str, Any], list[str], dict[bool, Any]] | None = self.anonymous.get(key)
        hit = cached is not None
        self._cache[hit].inc()
        if cached is None:
            context = shopper_context(request)
            mark = time.time_ns() if trace is not None else 0
            answer = await self._ranked(state, region, request, context, trace, mark, "miss")
            offer_ids = answer.offer_ids
            etag = etag_for(*key, *offer_ids)
            # The last item: the answer's cache headers, per value of vary_on_geo, made on first use.
            cached = (render(answer, request_id), etag, answer.fields(), offer_ids, {})
            self._observe(answer)
            if answer.fallback is None:  # a degraded answer is not worth keeping
                self.anonymous[key] = cached
        payload, etag, fields, offer_ids, headers_by_vary = cached
        if hit and trace is not None:
            trace.answered(fields, len(offer_ids), None, "hit")
        if self.recorder is not None:
            self.recorder.impression(request_id, fields, offer_ids, None, request.slot)
        vary_on_geo = request.region is None
        shared = headers_by_vary.get(vary_on_geo)
        if shared is None:  # the surrogate keys and the rest, built once per cached answer
            shared = headers_by_vary[vary_on_geo] = [
                CONTENT_JSON,
                *public_headers(self.cdn, etag, region, state.data_version, offer_ids, vary_on_geo=vary_on_geo),
            ]
        headers = shared.copy()
        cache_state = b"hit" if hit else b"miss"
        headers.append(
            (b"server-timing", b"cache;desc=" + cache_state + b";dur=%.3f" % ((time.perf_counter() - started) * 1000))
        )
        if etag_matches(viewer.if_none_match, etag):
            return 304, headers, b""
        return 200, headers, payload

    async def _ranked(
        self,
        state: EdgeState,
        region: str,
        request: RecommendationRequest,
        context: ShopperContext,
        trace: AnswerTrace | None,
        mark: int,
        cache: str | None,
    ) -> Answer:
        """Mask, score and rank, the steps both walks share; a traced answer gets the spans of the rule mask (from
        `mark`), the model run and the ranking rules, and is marked answered with its `cache` outcome."""
        chosen = candidates(state, region, request, context, self.rules)
        if trace is not None:
            trace.step("edge.rules.mask", mark)
        scored = await score(chosen, context, self.batcher, trace.context if trace is not None else None)
        if trace is not None:
            mark = time.time_ns()
        answer = rank(chosen, scored)
        if trace is not None:
            trace.step("edge.rules.rank", mark)
            trace.answered(answer.fields(), len(answer.positions), scored.batch_size, cache)
        return answer

    def _observe(self, answer: Answer) -> None:
        if answer.fallback is not None:
            self.metrics.fallbacks.labels(answer.fallback).inc()
        if self.recorder is not None:  # the per-variant health counters the spool ships with its events
            self.recorder.spool.health.record(
                answer.experiment, answer.variant, answer.region, answer.model_version, answer.fallback, answer.model_s
            )

    @staticmethod
    def _timing(started: float, parsed: float, model_s: float) -> tuple[bytes, bytes]:
        now = time.perf_counter()
        return (
            b"server-timing",
            b"parse;dur=%.3f, model;dur=%.3f, total;dur=%.3f"
            % ((parsed - started) * 1000, model_s * 1000, (now - started) * 1000),
        )
