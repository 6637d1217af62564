"""Feedback events at the edge: an impression for every answer served, and `POST /v1/events` (click, add_to_cart,
purchase), validated, pseudonymized and handed to the durable spool.

What is kept when the edge dies: a 202 of `POST /v1/events` is sent only once its events are written to the spool's
segment file (`--events-ack write`, the default: a SIGKILL of the edge loses none of them, a crash of the machine up
to about 25 ms), or written and fdatasync'ed (`--events-ack fsync`: a crash of the machine loses none either).
Impressions stay asynchronous (no client waits for them): they are written within about 5 ms, so a SIGKILL of the
edge loses at most the last ~5 ms of them, and a crash of the machine at most the last ~25 ms.

Idempotent: an event the client names with `event_id` is stored under an id derived from (request_id, event_id),
the same on every edge, so a retry after any failure (even one whose first try was kept) is stored once at the
origin; this worker also learns it into the shopper's profile once."""

from __future__ import annotations

import os
import time
from collections import OrderedDict
from typing import Any

import msgspec
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from origin_sync.wire.events import (
    KIND_IMPRESSION,
    FeedbackEvent,
    InvalidEvents,
    decode_feedback,
    feedback_event_id,
    pseudonym_key,
    pseudonymize,
)

from .cdn import read_viewer
from .responses import error_response, json_response
from .spool import EventSpool, NotKept
from .validation import RateLimited, RequestError, invalid


class EventRecorder:
    """What the request path calls: builds events (the shopper id only as its keyed pseudonym) for the spool."""

    __slots__ = ("spool", "_key", "_learned")

    # The ids of the latest client-named events this worker learned into profiles: a retry that reaches the same
    # worker is not counted twice. One that reaches another worker or replica is, in that edge's own profile only,
    # until the origin's summary (which counts each event id once) replaces its local events.
    LEARNED_IDS = 65_536

    def __init__(self, spool: EventSpool, pseudonym_secret: str | None) -> None:
        self.spool = spool
        self._key = pseudonym_key(pseudonym_secret) if pseudonym_secret else None
        self._learned: OrderedDict[str, None] = OrderedDict()

    def claim_learning(self, ids: list[str], events: list[tuple[FeedbackEvent, str]]) -> list[str]:
        """Of the kept events, those to learn into profiles: all but the client-named ones this worker learned
        (or is learning) already; their ids are claimed (`release` gives them back if learning fails)."""
        fresh = []
        for row_id, (event, _) in zip(ids, events):
            if event.event_id is not None and event.shopper_id is not None:
                if row_id in self._learned:
                    continue
                self._learned[row_id] = None
                if len(self._learned) > self.LEARNED_IDS:
                    self._learned.popitem(last=False)
                fresh.append(row_id)
        return fresh

    def release(self, claimed: list[str]) -> None:
        for row_id in claimed:
            self._learned.pop(row_id, None)

    def pseudonym(self, shopper_id: str | None) -> str | None:
        # Without a key no shopper reference is kept at all: events are then anonymous (and cannot be erased).
        if shopper_id is None or self._key is None:
            return None
        return pseudonymize(self._key, shopper_id)

    def impression(
        self, request_id: str, body: dict[str, Any], offer_ids: list[str], shopper_id: str | None, slot: str | None
    ) -> None:
        # A row in EVENT_FIELDS order: (id, kind, ts, region, request_id, shopper, experiment, variant, offer_ids,
        # value, currency, model_version, data_version, slot); an impression's id is its request_id.
        self.spool.append(
            [
                request_id,
                KIND_IMPRESSION,
                time.time(),
                body["region"],
                request_id,
                self.pseudonym(shopper_id),
                body.get("experiment"),
                body.get("variant"),
                offer_ids,
                None,
                None,
                body["model_version"],
                body["data_version"],
                slot,
            ]
        )


def parse_events(body: bytes, regions: tuple[str, ...]) -> list[tuple[FeedbackEvent, str]]:
    """The events of a `POST /v1/events` body (the wire's FeedbackBatch), each with the region it is for;
    RequestError (4xx) at the first problem."""
    if not body.strip():
        raise RequestError(400, "empty_body", 'request body is empty; send {"events": [...]}')
    try:
        events = decode_feedback(body)
    except InvalidEvents as exc:
        raise invalid(str(exc)) from None
    except msgspec.DecodeError as exc:
        raise RequestError(400, "invalid_json", f"request body is not valid JSON: {exc}") from None
    checked = []
    for i, event in enumerate(events):
        region = event.region
        if region is None:
            if len(regions) != 1:
                raise RequestError(
                    422, "region_required", f"events[{i}].region: this edge serves {', '.join(regions)}; say which"
                )
            region = regions[0]
        elif region.upper() not in regions:
            raise RequestError(
                404,
                "unknown_region",
                f"events[{i}].region: {region!r} is not served here; this edge serves {', '.join(regions)}",
            )
        checked.append((event, region.upper()))
    return checked


async def post_events(request: Request) -> Response:
    """`POST /v1/events`: 202 once the events are kept: written to the spool's segment file in the batch of this
    event loop pass (one write(2) for every request of the pass), and with `--events-ack fsync` fdatasync'ed too;
    503 with a JSON error when they could not be (spool full, write or sync failed, edge stopping), never a 202 for
    events not written. (Impressions, recorded without a client waiting, are written within ~5 ms: a SIGKILL loses
    at most that window of them, a crash of the machine ~25 ms.)"""
    app_state = request.app.state
    recorder: EventRecorder | None = app_state.recorder
    config = app_state.config
    if recorder is None:
        return error_response(
            RequestError(404, "events_disabled", "this edge does not take events (EDGEREC_EVENTS=off)")
        )
    limiter = app_state.limiter
    if limiter is not None:
        peer = request.scope.get("client")
        viewer = read_viewer(request.scope["headers"], peer[0] if peer else None, config.cdn)
        wait = limiter.check(viewer.client_ip)
        if wait:
            app_state.metrics.rate_limited.labels("/v1/events").inc()
            limited = RateLimited(wait)
            response = error_response(limited)
            response.headers["Retry-After"] = str(limited.retry_after)
            return response
    try:
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type not in ("application/json", "text/plain", "") and not content_type.endswith("+json"):
            raise RequestError(415, "unsupported_media_type", "send the events as application/json")
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > config.max_body_bytes:
            raise RequestError(413, "body_too_large", f"request body over {config.max_body_bytes} bytes")
        body = bytearray()
        try:
            async for chunk in request.stream():
                body += chunk
                if len(body) > config.max_body_bytes:
                    raise RequestError(413, "body_too_large", f"request body over {config.max_body_bytes} bytes")
        except ClientDisconnect:
            # The connection ended before the body did: the client went away, or edge_node.limits answered the
            # request itself (a body that did not arrive in time, a broken chunked encoding). Nothing reaches the
            # client any more; it is bad input, as on /v1/recommendations, not an error of the edge.
            raise RequestError(400, "client_disconnected", "client went away before sending the body") from None
        events = parse_events(bytes(body), config.regions)
        now = time.time()
        # A client-named event's id is the same on every try and every edge (so stored once); others stay random.
        ids = [
            os.urandom(16).hex() if event.event_id is None else feedback_event_id(event.request_id, event.event_id)
            for event, _ in events
        ]
        rows = [
            [
                row_id,
                event.type,
                now,
                region,
                event.request_id,
                recorder.pseudonym(event.shopper_id),
                event.experiment,
                event.variant,
                event.offer_ids,
                event.value,
                event.currency,
                None,
                None,
                None,
            ]
            for row_id, (event, region) in zip(ids, events)
        ]
        try:
            kept = recorder.spool.append_acked(rows)
            if kept is None:
                raise RequestError(503, "spool_full", "this edge cannot take events now; retry later")
            await kept
        except NotKept as exc:
            raise RequestError(503, exc.code, f"{exc}; retry later") from None
        # Kept: now the shoppers' profiles learn them, before the 202 (their next answer here reflects them).
        claimed = recorder.claim_learning(ids, events)
        learned = set(claimed)
        to_learn = [pair for row_id, pair in zip(ids, events) if pair[0].event_id is None or row_id in learned]
        try:
            await app_state.profiles.learn(to_learn, app_state.holder.current, now)
        except BaseException:
            recorder.release(claimed)
            raise
    except RequestError as exc:
        return error_response(exc)
    return json_response({"accepted": len(events)}, 202, {"Cache-Control": "private, no-store"})
