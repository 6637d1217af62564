"""Feedback events on the wire: their kinds and fields as msgspec Structs (what a shopper's client posts to an edge,
and the row an edge ships), the shopper pseudonym, and the msgpack batches an edge ships to the origin
(`POST /v1/sync/events`)."""

from __future__ import annotations

import hashlib
import struct
import zlib
from typing import Annotated, Any, Literal

import msgpack
import msgspec

from origin_sync.wire.fields import (
    CURRENCY_RULE,
    ID_RULE,
    MAX_ID_CHARS,
    MAX_VALUE,
    NAME_RULE,
    Currency,
    Finite,
    Id,
    Name,
    SchemaError,
    ShortText,
    error_path,
    explain,
)

KIND_IMPRESSION = "impression"
KIND_CLICK = "click"
KIND_ADD_TO_CART = "add_to_cart"
KIND_PURCHASE = "purchase"
KINDS = (KIND_IMPRESSION, KIND_CLICK, KIND_ADD_TO_CART, KIND_PURCHASE)
FEEDBACK_KINDS = (KIND_CLICK, KIND_ADD_TO_CART, KIND_PURCHASE)  # what shoppers' clients post to an edge
Kind = Literal["impression", "click", "add_to_cart", "purchase"]
FeedbackKind = Literal["click", "add_to_cart", "purchase"]
MAX_OFFER_IDS = 1000
MAX_BATCH_EVENTS = 500_000
MAX_BATCH_BYTES = 256 * 1024 * 1024
# What one `POST /v1/events` may carry.
MAX_EVENTS_PER_REQUEST = 100
MAX_OFFERS_PER_EVENT = 100


class EventRow(msgspec.Struct, array_like=True, forbid_unknown_fields=True):
    """An event as an edge spools and ships it: a row of exactly these values in this order (None where they do
    not apply); no IP address, no user agent. Its free-form labels are only bounded, not parsed: the origin takes
    what edges have spooled, earlier versions' too."""

    id: Id
    kind: Kind
    ts: Finite  # epoch seconds
    region: str  # one of the batch's regions
    request_id: Id
    shopper: ShortText | None  # the keyed pseudonym, never the shopper id
    experiment: ShortText | None
    variant: ShortText | None
    offer_ids: Annotated[list[ShortText], msgspec.Meta(max_length=MAX_OFFER_IDS)]
    value: Finite | None
    currency: ShortText | None
    model_version: ShortText | None
    data_version: int | None
    slot: ShortText | None


class EventMap(EventRow, array_like=False):
    """The same event as a map of those fields (what tools and tests write)."""


EVENT_FIELDS = EventRow.__struct_fields__
_ROW_RULES = {
    "id": f"a string of {ID_RULE}",
    "request_id": f"a string of {ID_RULE}",
    "kind": f"one of {', '.join(KINDS)}",
    "ts": "epoch seconds",
    "region": "a region of this batch",
    "offer_ids": f"a list of at most {MAX_OFFER_IDS} offer ids",
    "value": "a finite number or null",
    "data_version": "an integer or null",
    **dict.fromkeys(
        ("shopper", "experiment", "variant", "currency", "model_version", "slot"),
        f"a string of at most {MAX_ID_CHARS} characters or null",
    ),
}


class FeedbackEvent(msgspec.Struct, forbid_unknown_fields=True):
    """A click, add_to_cart or purchase as a shopper's client posts it to an edge (`POST /v1/events`)."""

    type: FeedbackKind
    request_id: Id  # of the recommendation answer the event follows
    offer_ids: Annotated[list[Id], msgspec.Meta(min_length=1, max_length=MAX_OFFERS_PER_EVENT)]
    value: Finite | None = None  # a purchase's, from 0 to MAX_VALUE; no other event has one
    currency: Currency | None = None
    shopper_id: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ID_CHARS)] | None = None
    experiment: Id | None = None
    variant: Name | None = None
    region: str | None = None  # one the edge serves; else its only region
    event_id: Id | None = None  # the client's idempotency key: a retry with the same one is stored once


class FeedbackBatch(msgspec.Struct, forbid_unknown_fields=True):
    """The body of `POST /v1/events`."""

    events: Annotated[list[FeedbackEvent], msgspec.Meta(min_length=1, max_length=MAX_EVENTS_PER_REQUEST)]


_PURCHASE_RULE = f"a purchase needs its value, a number from 0 to {MAX_VALUE:g}"
FEEDBACK_RULES = {
    "events": f"a list of 1 to {MAX_EVENTS_PER_REQUEST} events",
    "type": f"one of {', '.join(FEEDBACK_KINDS)}",
    "request_id": f"the request_id of the recommendation answer the event follows ({ID_RULE})",
    "offer_ids": f"a list of 1 to {MAX_OFFERS_PER_EVENT} offer ids ({ID_RULE})",
    "value": f"a number or null; {_PURCHASE_RULE}",
    "currency": CURRENCY_RULE,
    "shopper_id": f"a non-empty string of at most {MAX_ID_CHARS} characters",
    "experiment": f"the experiment of the answer, {ID_RULE}",
    "variant": f"the variant of the answer, {NAME_RULE}",
    "region": "a two-letter market code this edge serves",
    "event_id": f"the client's key for this event, the same on every retry of it ({ID_RULE})",
}
_FEEDBACK_DECODER = msgspec.json.Decoder(FeedbackBatch)
_ROWS_DECODER = msgspec.msgpack.Decoder(list[EventRow | dict[str, Any]])


class InvalidEvents(SchemaError):
    """A shipped batch or one of its events does not follow the event format."""


def pseudonym_key(secret: str) -> bytes:
    """The blake2b key derived from the deployment's EDGEREC_PSEUDONYM_KEY."""
    return hashlib.sha256(b"edgerec-pseudonym:" + secret.encode()).digest()


def pseudonymize(key: bytes, shopper_id: str) -> str:
    """The only form in which a shopper id is written to disk or leaves the edge: a keyed hash (blake2b, 128 bit).
    The origin never sees the id; `edgerec events erase` computes the same value from the id and the key."""
    return hashlib.blake2b(shopper_id.encode(), key=key, digest_size=16).hexdigest()


_EVENT_ID_KEY = b"edgerec-event-id"


def feedback_event_id(request_id: str, event_id: str) -> str:
    """The stored id of a feedback event whose client named it `event_id`: the same on every edge for every retry,
    and scoped by the answer it follows (request_id), so that two clients' keys never meet (blake2b, 128 bit; the
    key only separates this use of the hash from others, the ids are no secret)."""
    message = request_id.encode() + b"\x00" + event_id.encode()
    return hashlib.blake2b(message, key=_EVENT_ID_KEY, digest_size=16).hexdigest()


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
        if end > len(data) or zlib.crc32(data[offset + header : end]) != crc:
            return offset, count, True
        offset, count = end, count + 1
    return offset, count, False


def encode_batch(batch_id: str, regions: list[str], events: list[dict[str, Any]]) -> bytes:
    body = msgpack.packb(events, use_bin_type=True)
    return msgpack.packb(
        {"batch_id": batch_id, "regions": regions, "encoding": "zlib", "events": zlib.compress(body, 1)},
        use_bin_type=True,
    )


def encode_frames_batch(
    batch_id: str, regions: list[str], frames: bytes, health: list[list[Any]] | None = None
) -> bytes:
    """A batch whose events are whole frames (a spool segment's bytes, as written), with the edge's health
    counters since its last batch (health.py's rows; origins before them ignore the key)."""
    batch: dict[str, Any] = {"batch_id": batch_id, "regions": regions, "encoding": "frames", "events": frames}
    if health:
        batch["health"] = health
    return msgpack.packb(batch, use_bin_type=True)


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
        body = _inflate(
            data[offset + FRAME_HEADER.size : offset + FRAME_HEADER.size + length], MAX_BATCH_BYTES - inflated
        )
        inflated += len(body)
        events.extend(_unpack_events(body))
        if len(events) > MAX_BATCH_EVENTS:
            break
        offset += FRAME_HEADER.size + length
    return events


def _row_refusal(error: msgspec.ValidationError, index: int, as_map: bool = False) -> str:
    """The message for a refused event (built only on failure): its index in the batch, the field and why."""
    where = error_path(error)
    if not as_map and where == "":
        return "events: a msgpack list of events"
    if (not as_map and where.count("[") == 1 and where.endswith("]")) or (
        as_map and where == "" and str(error).startswith("Object ")
    ):
        return (
            f"events[{index if as_map else index + int(where[1:-1])}]: expected a map with exactly the fields "
            f"{', '.join(EVENT_FIELDS)} (or a list of their values in that order)"
        )
    if as_map:
        return explain(error, _ROW_RULES, prefix=f"events[{index}]")
    return explain(error, _ROW_RULES, names=EVENT_FIELDS, prefix="events", offset=index)


def _checked_events(body: bytes, first: int) -> list[EventRow]:
    """The events of one msgpack list (rows or maps), each checked against EventRow; `first` is the index in the
    batch of its first event, for the messages."""
    try:
        events = _ROWS_DECODER.decode(body)
    except msgspec.ValidationError as exc:
        raise InvalidEvents(_row_refusal(exc, first)) from None
    except msgspec.DecodeError as exc:
        raise InvalidEvents(f"undecodable events: {exc}") from None
    for i, event in enumerate(events):
        if type(event) is dict:
            try:
                events[i] = msgspec.convert(event, EventMap)
            except msgspec.ValidationError as exc:
                raise InvalidEvents(_row_refusal(exc, first + i, as_map=True)) from None
    return events  # type: ignore[return-value]  # every map is an EventMap now, a kind of EventRow


def _checked_frames(data: bytes) -> list[EventRow]:
    whole, _, torn = complete_frames(data)
    if torn:
        raise InvalidEvents(f"events: a torn or corrupted frame at byte {whole}")
    events: list[EventRow] = []
    inflated = offset = 0
    while offset < len(data) and len(events) <= MAX_BATCH_EVENTS:
        length, _ = FRAME_HEADER.unpack_from(data, offset)
        body = _inflate(
            data[offset + FRAME_HEADER.size : offset + FRAME_HEADER.size + length], MAX_BATCH_BYTES - inflated
        )
        inflated += len(body)
        events.extend(_checked_events(body, len(events)))
        offset += FRAME_HEADER.size + length
    return events


class EventBatch(msgspec.Struct):
    """The body of `POST /v1/sync/events` (msgpack): an edge's batch of events, its name the batch id."""

    batch_id: Id  # the spool segment's name: a retry of the same batch is acknowledged without a duplicate
    regions: Annotated[list[str], msgspec.Meta(min_length=1)]  # the edge's regions; every event is in one of them
    encoding: Literal["frames", "zlib", "identity"]  # of `events`: spool frames, zlib(msgpack list), msgpack list
    events: bytes


_BATCH_DECODER = msgspec.msgpack.Decoder(EventBatch)
_BATCH_RULES = {
    "batch_id": f"batch_id: a string of {ID_RULE}",
    "regions": "regions: the non-empty list of the edge's regions",
}


def decode_batch(data: bytes) -> tuple[str, list[str], list[dict[str, Any]]]:
    """(batch_id, regions, events) of a shipped batch, every event checked; InvalidEvents otherwise."""
    try:
        batch = _BATCH_DECODER.decode(data)
    except msgspec.ValidationError as exc:
        field = error_path(exc).lstrip(".").partition("[")[0]
        raise InvalidEvents(
            _BATCH_RULES.get(field)
            or "expected a map with batch_id, regions, encoding (frames, zlib or identity) and events (bytes)"
        ) from None
    except msgspec.DecodeError as exc:
        raise InvalidEvents(f"undecodable msgpack batch: {exc}") from None
    batch_id, regions, encoding = batch.batch_id, batch.regions, batch.encoding
    if encoding == "frames":
        events = _checked_frames(batch.events)
    else:
        events = _checked_events(_inflate(batch.events) if encoding == "zlib" else batch.events, 0)
    if len(events) > MAX_BATCH_EVENTS:
        raise InvalidEvents(f"events: a list of at most {MAX_BATCH_EVENTS} events")
    wanted = set(regions)
    for i, event in enumerate(events):
        if event.region not in wanted:
            raise InvalidEvents(f"events[{i}].region: {event.region!r} is not a region of this batch")
    return batch_id, regions, [msgspec.structs.asdict(e) for e in events]


def decode_feedback(body: bytes) -> list[FeedbackEvent]:
    """The events of a `POST /v1/events` body, checked but for the region (the edge knows which it serves);
    InvalidEvents names the field, msgspec.DecodeError says the body is not JSON."""
    try:
        events = _FEEDBACK_DECODER.decode(body).events
    except msgspec.ValidationError as exc:
        where = error_path(exc)
        if where == "":
            raise InvalidEvents("request body must be an object with exactly one field, 'events'") from None
        if (
            where.startswith(".events[")
            and where.endswith("]")
            and where.count("[") == 1
            and not str(exc).startswith("Object ")
        ):
            raise InvalidEvents(f"{where[1:]}: expected an object") from None
        raise InvalidEvents(explain(exc, FEEDBACK_RULES)) from None
    for i, event in enumerate(events):
        if event.type == KIND_PURCHASE:
            if event.value is None or not 0 <= event.value <= MAX_VALUE:
                raise InvalidEvents(f"events[{i}].value: {_PURCHASE_RULE}")
        elif event.value is not None:
            raise InvalidEvents(f"events[{i}].value: only a purchase has a value")
    return events
