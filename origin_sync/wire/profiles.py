"""Shopper profile summaries on the wire: the summary the origin folds from a shopper's events and ships in a
`profile_upsert` change, in exactly the msgpack form of the edge's profile record (`edge_node/profiles/codec.py`
`Profile`), so the edge's codec decodes and `merge`s it as it is; and the change an edge's syncer hands over.

The fold follows the codec's rules: a purchase weighs 1, an add_to_cart 0.5, a click 0.25; the decayed score
halves every 180 days and is kept as log2 referred to time 0; at most 256 items (the weakest goes) and the last 64
item events. Events are folded in time order (ties by their key), so the summary depends on the set of events
only: folding the same events again, in any order of arrival, gives the same bytes.
"""

from __future__ import annotations

import heapq
import math
from typing import Annotated, Any, Iterable, NamedTuple

import msgspec

from origin_sync.wire.events import KIND_ADD_TO_CART, KIND_CLICK, KIND_PURCHASE

MAX_RECENT = 64
MAX_ITEMS = 256
MAX_ITEM_CHARS = 64
HALF_LIFE_S = 180 * 86400.0
PROFILE_KINDS = (KIND_PURCHASE, KIND_ADD_TO_CART, KIND_CLICK)  # a kind travels as its position here
KIND_WEIGHTS = (1.0, 0.5, 0.25)
_KIND_CODES = {kind: code for code, kind in enumerate(PROFILE_KINDS)}
MAX_TS = 2**32 - 1
PSEUDONYM_CHARS = 32  # origin_sync.wire.events.pseudonymize: 16 bytes of blake2b, in hex

ItemId = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ITEM_CHARS)]
Seconds = Annotated[int, msgspec.Meta(ge=0, le=MAX_TS)]


class SummaryEvent(msgspec.Struct, array_like=True, frozen=True):
    kind: Annotated[int, msgspec.Meta(ge=0, lt=len(PROFILE_KINDS))]
    item: ItemId
    ts: Seconds


class SummaryItem(msgspec.Struct, array_like=True, frozen=True):
    count: Annotated[int, msgspec.Meta(ge=1, le=2**32 - 1)]
    first_seen: Seconds
    last_seen: Seconds
    log_score: float


class Summary(msgspec.Struct, array_like=True, frozen=True):
    """The edge codec's `Profile`, field for field: what a `profile_upsert` change carries, encoded."""

    recent: Annotated[tuple[SummaryEvent, ...], msgspec.Meta(max_length=MAX_RECENT)] = ()
    items: Annotated[dict[ItemId, SummaryItem], msgspec.Meta(max_length=MAX_ITEMS)] = msgspec.field(
        default_factory=dict
    )


class ProfileChange(NamedTuple):
    """A verified profile change as the syncer hands it to the edge: a summary to merge (`summary` is the encoded
    `Summary`, `summary_ts` the time up to which it counts every event) or, with `summary` None, an erasure."""

    pseudonym: str
    summary: bytes | None
    summary_ts: float


class ProfileEvent(NamedTuple):
    """One event a summary is folded from: its key (unique per shopper: the same event twice is one), kind, item
    and time in whole Unix seconds."""

    key: str
    kind: str
    item: str
    ts: int


_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(Summary)


def is_pseudonym(value: object) -> bool:
    return isinstance(value, str) and len(value) == PSEUDONYM_CHARS and all(c in "0123456789abcdef" for c in value)


def check_event(kind: object, item: object, ts: object) -> str | None:
    """Why an event cannot go into a summary, or None when it can."""
    if kind not in _KIND_CODES:
        return f"kind: one of {', '.join(PROFILE_KINDS)}"
    if not isinstance(item, str) or not 1 <= len(item) <= MAX_ITEM_CHARS:
        return f"item: a string of 1 to {MAX_ITEM_CHARS} characters"
    if not isinstance(ts, int) or isinstance(ts, bool) or not 0 <= ts <= MAX_TS:
        return "ts: whole Unix seconds"
    return None


def _log_add(a: float, b: float) -> float:
    high, low = (a, b) if a >= b else (b, a)
    return high + math.log2(1.0 + math.exp2(low - high))


def fold(events: Iterable[ProfileEvent]) -> tuple[Summary, int]:
    """The summary of a shopper's events and the newest event's time (0 for none)."""
    items: dict[str, SummaryItem] = {}
    recent: list[SummaryEvent] = []
    newest = 0
    for event in sorted(events, key=lambda e: (e.ts, e.key)):
        code = _KIND_CODES[event.kind]
        log_weight = math.log2(KIND_WEIGHTS[code]) + event.ts / HALF_LIFE_S
        old = items.get(event.item)
        items[event.item] = (
            SummaryItem(1, event.ts, event.ts, log_weight)
            if old is None
            else SummaryItem(
                old.count + 1,
                min(old.first_seen, event.ts),
                max(old.last_seen, event.ts),
                _log_add(old.log_score, log_weight),
            )
        )
        if len(items) > MAX_ITEMS:
            for weakest in heapq.nsmallest(len(items) - MAX_ITEMS, items, key=lambda i: items[i].log_score):
                del items[weakest]
        recent.append(SummaryEvent(code, event.item, event.ts))
        newest = max(newest, event.ts)
    return Summary(tuple(recent[-MAX_RECENT:]), {k: items[k] for k in sorted(items)}), newest


def encode_summary(summary: Summary) -> bytes:
    return _ENCODER.encode(summary)


def decode_summary(data: bytes) -> Summary:
    """The summary a change carries; msgspec.DecodeError / ValidationError for anything else."""
    return _DECODER.decode(data)


def readable(summary: Summary) -> dict[str, Any]:
    """The summary as plain JSON for a person reading their own data (right of access)."""
    return {
        "recent": [{"kind": PROFILE_KINDS[e.kind], "item": e.item, "ts": e.ts} for e in summary.recent],
        "items": {
            item: {
                "count": s.count,
                "first_seen": s.first_seen,
                "last_seen": s.last_seen,
                "log2_score_at_epoch": s.log_score,
            }
            for item, s in summary.items.items()
        },
    }
