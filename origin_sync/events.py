"""Feedback events on the wire: their kinds and fields, the shopper pseudonym, and the msgpack batches an edge
ships to the origin (`POST /v1/sync/events`)."""

from __future__ import annotations

import hashlib
import math
import re
import zlib
from typing import Any

import msgpack

KIND_IMPRESSION = "impression"
KIND_CLICK = "click"
KIND_ADD_TO_CART = "add_to_cart"
KIND_PURCHASE = "purchase"
KINDS = (KIND_IMPRESSION, KIND_CLICK, KIND_ADD_TO_CART, KIND_PURCHASE)
FEEDBACK_KINDS = (KIND_CLICK, KIND_ADD_TO_CART, KIND_PURCHASE)  # what shoppers' clients post to an edge

# Every event has exactly these fields (None where they do not apply); no IP address, no user agent.
EVENT_FIELDS = ("id", "kind", "ts", "region", "request_id", "shopper", "experiment", "variant", "offer_ids",
                "value", "currency", "model_version", "data_version", "slot")
MAX_OFFER_IDS = 1000
MAX_BATCH_EVENTS = 500_000
MAX_BATCH_BYTES = 256 * 1024 * 1024
_TOKEN_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class InvalidEvents(ValueError):
    """A shipped batch or one of its events does not follow the event format."""


def pseudonym_key(secret: str) -> bytes:
    """The blake2b key derived from the deployment's EDGEREC_PSEUDONYM_KEY."""
    return hashlib.sha256(b"edgerec-pseudonym:" + secret.encode()).digest()


def pseudonymize(key: bytes, shopper_id: str) -> str:
    """The only form in which a shopper id is written to disk or leaves the edge: a keyed hash (blake2b, 128 bit).
    The origin never sees the id; `edgerec events erase` computes the same value from the id and the key."""
    return hashlib.blake2b(shopper_id.encode(), key=key, digest_size=16).hexdigest()


def encode_batch(batch_id: str, regions: list[str], events: list[dict[str, Any]]) -> bytes:
    body = msgpack.packb(events, use_bin_type=True)
    return msgpack.packb({"batch_id": batch_id, "regions": regions, "encoding": "zlib",
                          "events": zlib.compress(body, 1)}, use_bin_type=True)


def _inflate(data: bytes) -> bytes:
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(data, MAX_BATCH_BYTES)
    except zlib.error as exc:
        raise InvalidEvents(f"events: corrupted compressed payload ({exc})") from None
    if inflater.unconsumed_tail or not inflater.eof:
        raise InvalidEvents("events: truncated payload, or one that expands beyond the limit")
    return out


def _check_event(event: object, regions: set[str], index: int) -> dict[str, Any]:
    where = f"events[{index}]"
    if not isinstance(event, dict) or set(event) != set(EVENT_FIELDS):
        raise InvalidEvents(f"{where}: expected a map with exactly the fields {', '.join(EVENT_FIELDS)}")
    if event["kind"] not in KINDS:
        raise InvalidEvents(f"{where}.kind: one of {', '.join(KINDS)}")
    if event["region"] not in regions:
        raise InvalidEvents(f"{where}.region: {event['region']!r} is not a region of this batch")
    for name in ("id", "request_id"):
        if not isinstance(event[name], str) or not _TOKEN_RE.match(event[name]):
            raise InvalidEvents(f"{where}.{name}: a string of 1-128 letters, digits and . _ : -")
    ts = event["ts"]
    if isinstance(ts, bool) or not isinstance(ts, (int, float)) or not math.isfinite(ts):
        raise InvalidEvents(f"{where}.ts: epoch seconds")
    for name in ("shopper", "experiment", "variant", "currency", "model_version", "slot"):
        if event[name] is not None and (not isinstance(event[name], str) or len(event[name]) > 128):
            raise InvalidEvents(f"{where}.{name}: a string of at most 128 characters or null")
    offer_ids = event["offer_ids"]
    if not isinstance(offer_ids, list) or len(offer_ids) > MAX_OFFER_IDS \
            or not all(isinstance(o, str) and len(o) <= 128 for o in offer_ids):
        raise InvalidEvents(f"{where}.offer_ids: a list of at most {MAX_OFFER_IDS} offer ids")
    value = event["value"]
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                              or not math.isfinite(value)):
        raise InvalidEvents(f"{where}.value: a finite number or null")
    if event["data_version"] is not None and (isinstance(event["data_version"], bool)
                                              or not isinstance(event["data_version"], int)):
        raise InvalidEvents(f"{where}.data_version: an integer or null")
    return event


def decode_batch(data: bytes) -> tuple[str, list[str], list[dict[str, Any]]]:
    """(batch_id, regions, events) of a shipped batch, every event checked; InvalidEvents otherwise."""
    try:
        outer = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise InvalidEvents(f"undecodable msgpack batch: {exc}") from None
    if not isinstance(outer, dict) or outer.get("encoding") not in ("zlib", "identity") \
            or not isinstance(outer.get("events"), bytes):
        raise InvalidEvents("expected a map with batch_id, regions, encoding (zlib) and events (bytes)")
    batch_id, regions = outer.get("batch_id"), outer.get("regions")
    if not isinstance(batch_id, str) or not _TOKEN_RE.match(batch_id):
        raise InvalidEvents("batch_id: a string of 1-128 letters, digits and . _ : -")
    if not isinstance(regions, list) or not regions or not all(isinstance(r, str) for r in regions):
        raise InvalidEvents("regions: the non-empty list of the edge's regions")
    body = _inflate(outer["events"]) if outer["encoding"] == "zlib" else outer["events"]
    try:
        events = msgpack.unpackb(body, raw=False, strict_map_key=True)
    except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise InvalidEvents(f"undecodable events: {exc}") from None
    if not isinstance(events, list) or len(events) > MAX_BATCH_EVENTS:
        raise InvalidEvents(f"events: a list of at most {MAX_BATCH_EVENTS} events")
    wanted = set(regions)
    return batch_id, regions, [_check_event(e, wanted, i) for i, e in enumerate(events)]
