"""Feedback events at the edge: an impression for every answer served, and `POST /v1/events` (click, add_to_cart,
purchase), validated, pseudonymized and handed to the durable spool.

What is kept when the edge dies: a 202 of `POST /v1/events` is sent only once its events are written to the spool's
segment file (`--events-ack write`, the default: a SIGKILL of the edge loses none of them, a crash of the machine up
to about 25 ms), or written and fdatasync'ed (`--events-ack fsync`: a crash of the machine loses none either).
Impressions stay asynchronous (no client waits for them): they are written within about 5 ms, so a SIGKILL of the
edge loses at most the last ~5 ms of them, and a crash of the machine at most the last ~25 ms."""

from __future__ import annotations

import math
import os
import re
import time
from typing import Any

import orjson
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from origin_sync.wire.events import (
    FEEDBACK_KINDS,
    KIND_IMPRESSION,
    KIND_PURCHASE,
    pseudonym_key,
    pseudonymize,
)

from .cdn import read_viewer
from .responses import error_response, json_response
from .spool import EventSpool, NotKept
from .validation import MAX_ID_CHARS, RateLimited, RequestError, invalid

MAX_EVENTS_PER_REQUEST = 100
MAX_OFFERS_PER_EVENT = 100
MAX_VALUE = 1e9
EVENT_FIELDS = frozenset({"type", "request_id", "offer_ids", "value", "currency", "shopper_id", "experiment",
                          "variant", "region"})
_TOKEN_RE = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
_CURRENCY_RE = re.compile(r"^[A-Z]{3}$")


class EventRecorder:
    """What the request path calls: builds events (the shopper id only as its keyed pseudonym) for the spool."""

    __slots__ = ("spool", "_key")

    def __init__(self, spool: EventSpool, pseudonym_secret: str | None) -> None:
        self.spool = spool
        self._key = pseudonym_key(pseudonym_secret) if pseudonym_secret else None

    def pseudonym(self, shopper_id: str | None) -> str | None:
        # Without a key no shopper reference is kept at all: events are then anonymous (and cannot be erased).
        if shopper_id is None or self._key is None:
            return None
        return pseudonymize(self._key, shopper_id)

    def impression(self, request_id: str, body: dict[str, Any], offer_ids: list[str], shopper_id: str | None,
                   slot: str | None) -> None:
        # A row in EVENT_FIELDS order: (id, kind, ts, region, request_id, shopper, experiment, variant, offer_ids,
        # value, currency, model_version, data_version, slot); an impression's id is its request_id.
        self.spool.append([
            request_id, KIND_IMPRESSION, time.time(), body["region"], request_id, self.pseudonym(shopper_id),
            body.get("experiment"), body.get("variant"), offer_ids, None, None, body["model_version"],
            body["data_version"], slot,
        ])


def _optional_token(event: dict[str, Any], name: str, where: str) -> str | None:
    value = event.get(name)
    if value is not None and (not isinstance(value, str) or not _TOKEN_RE.match(value)):
        raise invalid(f"{where}.{name}: 1-64 characters of letters, digits and . _ : -")
    return value


def parse_events(body: bytes, regions: tuple[str, ...]) -> list[dict[str, Any]]:
    """The events of a `POST /v1/events` body, checked; RequestError (4xx) at the first problem."""
    if not body.strip():
        raise RequestError(400, "empty_body", "request body is empty; send {\"events\": [...]}")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise RequestError(400, "invalid_json", f"request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict) or set(data) != {"events"}:
        raise invalid("request body must be an object with exactly one field, 'events'")
    raw = data["events"]
    if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_EVENTS_PER_REQUEST:
        raise invalid(f"events: a list of 1 to {MAX_EVENTS_PER_REQUEST} events")
    checked = []
    for i, event in enumerate(raw):
        where = f"events[{i}]"
        if not isinstance(event, dict):
            raise invalid(f"{where}: expected an object")
        unknown = set(event) - EVENT_FIELDS
        if unknown:
            raise invalid(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
        kind = event.get("type")
        if kind not in FEEDBACK_KINDS:
            raise invalid(f"{where}.type: one of {', '.join(FEEDBACK_KINDS)}")
        request_id = event.get("request_id")
        if not isinstance(request_id, str) or not _TOKEN_RE.match(request_id):
            raise invalid(f"{where}.request_id: the request_id of the recommendation answer the event follows")
        offer_ids = event.get("offer_ids")
        if not isinstance(offer_ids, list) or not 1 <= len(offer_ids) <= MAX_OFFERS_PER_EVENT or not all(
                isinstance(o, str) and 0 < len(o) <= MAX_ID_CHARS for o in offer_ids):
            raise invalid(f"{where}.offer_ids: a list of 1 to {MAX_OFFERS_PER_EVENT} offer ids")
        value = event.get("value")
        if kind == KIND_PURCHASE:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or not 0 <= value <= MAX_VALUE:
                raise invalid(f"{where}.value: a purchase needs its value, a number from 0 to {MAX_VALUE:g}")
            value = float(value)
        elif value is not None:
            raise invalid(f"{where}.value: only a purchase has a value")
        currency = event.get("currency")
        if currency is not None and (not isinstance(currency, str) or not _CURRENCY_RE.match(currency)):
            raise invalid(f"{where}.currency: a three-letter ISO 4217 code such as GBP")
        shopper_id = event.get("shopper_id")
        if shopper_id is not None and (not isinstance(shopper_id, str) or not 0 < len(shopper_id) <= MAX_ID_CHARS):
            raise invalid(f"{where}.shopper_id: a non-empty string of at most {MAX_ID_CHARS} characters")
        region = event.get("region")
        if region is None:
            if len(regions) != 1:
                raise RequestError(422, "region_required", f"{where}.region: this edge serves "
                                                           f"{', '.join(regions)}; say which")
            region = regions[0]
        elif not isinstance(region, str) or region.upper() not in regions:
            raise RequestError(404, "unknown_region", f"{where}.region: {region!r} is not served here; this edge "
                                                      f"serves {', '.join(regions)}")
        checked.append({"kind": kind, "request_id": request_id, "offer_ids": offer_ids, "value": value,
                        "currency": currency, "shopper_id": shopper_id, "region": region.upper(),
                        "experiment": _optional_token(event, "experiment", where),
                        "variant": _optional_token(event, "variant", where)})
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
        return error_response(RequestError(404, "events_disabled",
                                           "this edge does not take events (EDGEREC_EVENTS=off)"))
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
        rows = [[
            os.urandom(8).hex(), event["kind"], now, event["region"], event["request_id"],
            recorder.pseudonym(event["shopper_id"]), event["experiment"], event["variant"], event["offer_ids"],
            event["value"], event["currency"], None, None, None,
        ] for event in events]
        try:
            kept = recorder.spool.append_acked(rows)
            if kept is None:
                raise RequestError(503, "spool_full", "this edge cannot take events now; retry later")
            await kept
        except NotKept as exc:
            raise RequestError(503, exc.code, f"{exc}; retry later") from None
    except RequestError as exc:
        return error_response(exc)
    return json_response({"accepted": len(events)}, 202, {"Cache-Control": "private, no-store"})
