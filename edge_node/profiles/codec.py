"""The shopper profile the edge keeps and its compact msgpack form: the recent events, and a per-item summary of
the whole history (count, first and last seen, decayed frequency).

Bounds, each kept by `apply` and `merge` and checked by `decode`:
- `recent`: the last MAX_RECENT (64) item events, one per item of an event (a basket of 5 is 5 entries), in the
  order they arrived, the oldest dropped first;
- `items`: at most MAX_ITEMS (256) items; past that, the item with the lowest decayed frequency is dropped;
- item ids of 1 to MAX_ITEM_CHARS (64) characters, as `POST /v1/events` accepts them;
- so one encoded profile is at most MAX_ENCODED_BYTES (about 28 KB); a full one with short offer ids about 7 KB.

Decayed frequency: each event adds its kind's weight (purchase 1, add_to_cart 0.5, click 0.25) to the item's score,
which halves every HALF_LIFE_S (180 days, the half-life the decayed-frequency baseline was tuned with). It is stored
as `log_score`, the log2 of the score referred to time 0, so that comparing two items needs no clock and no
exponent: the score at time t is 2 ** (log_score - t / HALF_LIFE_S) (`ItemStats.decayed_at`).
"""

from __future__ import annotations

import heapq
import math
from typing import Annotated

import msgspec

from origin_sync.wire.events import KIND_ADD_TO_CART, KIND_CLICK, KIND_PURCHASE

from .interface import CorruptRecord, ProfileEvent

MAX_RECENT = 64
MAX_ITEMS = 256
MAX_ITEM_CHARS = 64
HALF_LIFE_S = 180 * 86400.0
KINDS = (KIND_PURCHASE, KIND_ADD_TO_CART, KIND_CLICK)  # a kind is stored as its position here
KIND_WEIGHTS = (1.0, 0.5, 0.25)
_KIND_CODES = {kind: code for code, kind in enumerate(KINDS)}
_MAX_TS = 2**32 - 1  # whole Unix seconds, up to 2106
# Worst case, every id at MAX_ITEM_CHARS: a recent entry is an array of a kind (1 byte), an id (2 + 64) and a time
# (5); an item is its id as the map key, then an array of a count (5), two times (5 each) and a float64 (9).
MAX_ENCODED_BYTES = 16 + MAX_RECENT * (1 + 1 + 2 + MAX_ITEM_CHARS + 5) + MAX_ITEMS * (2 + MAX_ITEM_CHARS + 1 + 24)

ItemId = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ITEM_CHARS)]
Seconds = Annotated[int, msgspec.Meta(ge=0, le=_MAX_TS)]


# gc=False: a record's events and item statistics hold only numbers and strings, so they can be in no reference
# cycle, and the collector need not track them. Tracked, a hit's decoded record added about 50 objects that lived
# across the request's wait for the model: enough promotions to run a full collection of the edge's heap (its
# offers) every half second under load, 30 to 130 ms each (measured with a gc callback in the profile mode).
class RecentEvent(msgspec.Struct, array_like=True, frozen=True, gc=False):
    kind: Annotated[int, msgspec.Meta(ge=0, lt=len(KINDS))]  # KINDS[kind]
    item: ItemId
    ts: Seconds


class ItemStats(msgspec.Struct, array_like=True, frozen=True, gc=False):
    count: Annotated[int, msgspec.Meta(ge=1, le=2**32 - 1)]  # events that named the item
    first_seen: Seconds
    last_seen: Seconds
    log_score: float

    def decayed_at(self, ts: float) -> float:
        return math.exp2(self.log_score - ts / HALF_LIFE_S)


class Profile(msgspec.Struct, array_like=True, frozen=True):
    """One shopper's profile. Never mutated once built (`items` included): the codec returns new ones."""

    recent: Annotated[tuple[RecentEvent, ...], msgspec.Meta(max_length=MAX_RECENT)] = ()
    items: Annotated[dict[ItemId, ItemStats], msgspec.Meta(max_length=MAX_ITEMS)] = msgspec.field(default_factory=dict)

    def decayed_at(self, item: str, ts: float) -> float:
        stats = self.items.get(item)
        return 0.0 if stats is None else stats.decayed_at(ts)

    def recent_items(self, kind: str = KIND_PURCHASE) -> list[str]:
        """The items of the recent events of one kind, most recent last, repeats kept (as `recent_items`)."""
        code = _KIND_CODES[kind]
        return [event.item for event in self.recent if event.kind == code]


def _log_add(log_score: float, log_weight: float) -> float:
    """log2(2**a + 2**b) without overflow: the scores referred to time 0 are large powers of two."""
    high, low = (log_score, log_weight) if log_score >= log_weight else (log_weight, log_score)
    return high + math.log2(1.0 + math.exp2(low - high))


def _add(stats: ItemStats | None, ts: int, weight: float) -> ItemStats:
    log_weight = math.log2(weight) + ts / HALF_LIFE_S
    if stats is None:
        return ItemStats(1, ts, ts, log_weight)
    return ItemStats(
        stats.count + 1, min(stats.first_seen, ts), max(stats.last_seen, ts), _log_add(stats.log_score, log_weight)
    )


def _bounded(items: dict[str, ItemStats]) -> dict[str, ItemStats]:
    if len(items) > MAX_ITEMS:
        for item in heapq.nsmallest(len(items) - MAX_ITEMS, items, key=lambda item: items[item].log_score):
            del items[item]
    return items


def _whole_seconds(ts: float) -> int:
    if not math.isfinite(ts) or ts < 0 or ts > _MAX_TS:
        raise ValueError(f"event time {ts!r} is not a Unix time in seconds")
    return int(ts)


class ProfileCodec:
    """The codec of `Profile` (the protocol: edge_node.profiles.interface.ProfileCodec)."""

    max_encoded_bytes = MAX_ENCODED_BYTES

    def __init__(self) -> None:
        self._encoder = msgspec.msgpack.Encoder()
        self._decoder = msgspec.msgpack.Decoder(Profile)

    def empty(self) -> Profile:
        return Profile()

    def apply(self, record: Profile, event: ProfileEvent) -> Profile:
        code = _KIND_CODES.get(event.kind)
        if code is None:
            raise ValueError(f"a profile learns from {', '.join(KINDS)} events, not {event.kind!r}")
        if not event.items:
            raise ValueError("an event names at least one item")
        ts = _whole_seconds(event.ts)
        weight = KIND_WEIGHTS[code]
        items = dict(record.items)
        added = []
        for item in event.items:
            if not item or len(item) > MAX_ITEM_CHARS:
                raise ValueError(f"item ids have 1 to {MAX_ITEM_CHARS} characters")
            items[item] = _add(items.get(item), ts, weight)
            added.append(RecentEvent(code, item, ts))
        return Profile((record.recent + tuple(added))[-MAX_RECENT:], _bounded(items))

    def merge(self, record: Profile | None, summary: Profile, summary_ts: float) -> Profile:
        """The origin's summary counts every event up to `summary_ts` (the edge shipped its own events there);
        the local events after that time are applied on top of it, so none is counted twice."""
        merged = Profile(summary.recent[-MAX_RECENT:], _bounded(dict(summary.items)))
        if record is not None:
            for event in record.recent:
                if event.ts > summary_ts:
                    merged = self.apply(merged, ProfileEvent(KINDS[event.kind], (event.item,), event.ts))
        return merged

    def encode(self, record: Profile) -> bytes:
        return self._encoder.encode(record)

    def decode(self, data: bytes) -> Profile:
        try:
            return self._decoder.decode(data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise CorruptRecord(f"not a profile record ({exc})") from None
