"""Feedback events on the wire: their kinds and fields, the shopper pseudonym, and the msgpack batches an edge
ships to the origin (`POST /v1/sync/events`)."""

from __future__ import annotations

import hashlib
import math
import re
import struct
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


# A frame: payload length, crc32 of the payload, then the payload = zlib(msgpack list of events). The edge's spool
# segments are sequences of frames, and a batch of encoding "frames" carries a segment's bytes as they are, so the
# edge ships without decoding or re-encoding anything. An event in a frame is a row (a list in EVENT_FIELDS order,
# the edge's compact form) or a map of those fields.
FRAME_HEADER = struct.Struct(">II")


def encode_frame(rows: list[Any]) -> bytes:
    payload = zlib.compress(msgpack.packb(rows, use_bin_type=True), 1)  # offer ids repeat: about 3x smaller
    return FRAME_HEADER.pack(len(payload), zlib.crc32(payload)) + payload


def complete_frames(data: bytes) -> tuple[int, int, bool]:
    """(bytes of the whole frames at the start of data, their number, whether a torn frame follows them).
    Checks lengths and checksums only: nothing is decompressed or decoded."""
    offset = count = 0
    header = FRAME_HEADER.size
    while offset < len(data):
        if offset + header > len(data):
            return offset, count, True
        length, crc = FRAME_HEADER.unpack_from(data, offset)
        end = offset + header + length
        if end > len(data) or zlib.crc32(data[offset + header:end]) != crc:
            return offset, count, True
        offset, count = end, count + 1
    return offset, count, False


def encode_batch(batch_id: str, regions: list[str], events: list[dict[str, Any]]) -> bytes:
    body = msgpack.packb(events, use_bin_type=True)
    return msgpack.packb({"batch_id": batch_id, "regions": regions, "encoding": "zlib",
                          "events": zlib.compress(body, 1)}, use_bin_type=True)


def encode_frames_batch(batch_id: str, regions: list[str], frames: bytes) -> bytes:
    """A batch whose events are whole frames (a spool segment's bytes, as written)."""
    return msgpack.packb({"batch_id": batch_id, "regions": regions, "encoding": "frames", "events": frames},
                         use_bin_type=True)


def _inflate(data: bytes, limit: int = MAX_BATCH_BYTES) -> bytes:
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(data, max(1, limit))
    except zlib.error as exc:
        raise InvalidEvents(f"events: corrupted compressed payload ({exc})") from None
    if inflater.unconsumed_tail or not inflater.eof:
        raise InvalidEvents("events: truncated payload, or one that expands beyond the limit")
    return out


def _unpack_events(body: bytes) -> list[Any]:
    try:
        events = msgpack.unpackb(body, raw=False, strict_map_key=True)
    except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise InvalidEvents(f"undecodable events: {exc}") from None
    if not isinstance(events, list):
        raise InvalidEvents("events: a msgpack list of events")
    return events


def decode_frames(data: bytes) -> list[Any]:
    """The events (rows or maps, unchecked) of whole frames; InvalidEvents for a torn or corrupted one."""
    whole, _, torn = complete_frames(data)
    if torn:
        raise InvalidEvents(f"events: a torn or corrupted frame at byte {whole}")
    events: list[Any] = []
    inflated = 0
    offset = 0
    while offset < len(data):
        length, _ = FRAME_HEADER.unpack_from(data, offset)
        body = _inflate(data[offset + FRAME_HEADER.size: offset + FRAME_HEADER.size + length],
                        MAX_BATCH_BYTES - inflated)
        inflated += len(body)
        events.extend(_unpack_events(body))
        if len(events) > MAX_BATCH_EVENTS:
            break
        offset += FRAME_HEADER.size + length
    return events


_FIELD_SET = frozenset(EVENT_FIELDS)


def _check_event(event: object, regions: set[str], index: int) -> dict[str, Any]:
    where = f"events[{index}]"
    if isinstance(event, list) and len(event) == len(EVENT_FIELDS):
        event = dict(zip(EVENT_FIELDS, event))
    if not isinstance(event, dict) or event.keys() != _FIELD_SET:
        raise InvalidEvents(f"{where}: expected a map with exactly the fields {', '.join(EVENT_FIELDS)} "
                            f"(or a list of their values in that order)")
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
    if not isinstance(outer, dict) or outer.get("encoding") not in ("frames", "zlib", "identity") \
            or not isinstance(outer.get("events"), bytes):
        raise InvalidEvents("expected a map with batch_id, regions, encoding (frames, zlib or identity) and "
                            "events (bytes)")
    batch_id, regions = outer.get("batch_id"), outer.get("regions")
    if not isinstance(batch_id, str) or not _TOKEN_RE.match(batch_id):
        raise InvalidEvents("batch_id: a string of 1-128 letters, digits and . _ : -")
    if not isinstance(regions, list) or not regions or not all(isinstance(r, str) for r in regions):
        raise InvalidEvents("regions: the non-empty list of the edge's regions")
    encoding = outer["encoding"]
    if encoding == "frames":
        events = decode_frames(outer["events"])
    else:
        events = _unpack_events(_inflate(outer["events"]) if encoding == "zlib" else outer["events"])
    if len(events) > MAX_BATCH_EVENTS:
        raise InvalidEvents(f"events: a list of at most {MAX_BATCH_EVENTS} events")
    wanted = set(regions)
    return batch_id, regions, [_check_event(e, wanted, i) for i, e in enumerate(events)]
