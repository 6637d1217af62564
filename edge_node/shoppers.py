"""The shopper's profile at the edge: the one profile store (embedded, or the region's Redis) opened from the config,
read by the keyed pseudonym of the shopper id, taught by `POST /v1/events`, and turned into what the model reads.
The raw shopper id goes no further than `pseudonym` here: never to the store, its files, Redis or a log line."""

from __future__ import annotations

import logging
import math
from collections import Counter, OrderedDict
from typing import TYPE_CHECKING, Any, Iterable, Sequence

from models.profile import DECAY_DAYS, ItemSummary
from models.profile import Profile as HistoryProfile
from origin_sync.wire.events import KIND_ADD_TO_CART, KIND_PURCHASE, FeedbackEvent, pseudonym_key, pseudonymize

from .catalog import RegionCatalog
from .profiles import EmbeddedProfileStore, Profile, ProfileCodec, ProfileEvent, ProfileStore, StoreLocked
from .profiles.codec import KINDS, MAX_ITEM_CHARS

if TYPE_CHECKING:
    from .config import EdgeConfig
    from .state import EdgeState

log = logging.getLogger("edgerec.edge")

DAY_S = 86400.0
# The add_to_cart events of a profile's last day are the shopper's cart as the edge knows it.
CART_WINDOW_S = DAY_S
_DECAY_S = DECAY_DAYS * DAY_S
_PURCHASE = KINDS.index(KIND_PURCHASE)
_ADD_TO_CART = KINDS.index(KIND_ADD_TO_CART)
# Shoppers whose model input a hit reuses: a session's repeat requests find theirs (about 1 µs a check) instead of
# rebuilding it (history_profile, then the model's encoding, about 40 µs). A few KB each.
HIT_INPUTS = 2048


class ShopperProfiles:
    """The edge's profile store (`store`, None until `open` and with profiles off or no pseudonym key) and the key
    of the pseudonyms it is read by. `app.state.profiles` is this object: the origin's sync hooks call
    `store.put_summary` and `store.erase` on it."""

    def __init__(self, config: EdgeConfig) -> None:
        self.config = config
        self.store: ProfileStore[Profile] | None = None
        wanted = config.profile_store != "off" and bool(config.pseudonym_key)
        self._key = pseudonym_key(config.pseudonym_key) if wanted else None
        self.inputs = HitInputs(HIT_INPUTS)

    def pseudonym(self, shopper_id: str) -> str | None:
        return pseudonymize(self._key, shopper_id) if self._key is not None else None

    async def open(self) -> None:
        """Open the configured store (at the edge's start, on its event loop). A store file that is damaged or
        written under another key is refused by the store itself (logged, moved aside, started empty)."""
        config = self.config
        if self._key is None:
            if config.profile_store != "off":
                log.warning(
                    "EDGEREC_PSEUDONYM_KEY is not set: no shopper profiles (shopper ids get the anonymous path)"
                )
            return
        codec = ProfileCodec()
        if config.profile_store == "redis":
            from .profiles.redis_store import RedisProfileStore  # redis-py: the profiles-redis extra

            self.store = RedisProfileStore(
                config.profile_redis_url,
                config.pseudonym_key,
                codec,
                prefix=config.profile_redis_prefix,
                retention_s=config.profile_retention_s,
                read_timeout_s=config.profile_read_timeout_s,
                write_timeout_s=config.profile_write_timeout_s,
            )
            log.info("shopper profiles in Redis (prefix %s)", config.profile_redis_prefix)
            return
        directory = config.profile_directory
        try:
            store = EmbeddedProfileStore(
                directory,
                config.pseudonym_key,
                codec,
                budget_bytes=config.profile_budget_bytes,
                retention_s=config.profile_retention_s,
                fsync_interval_s=config.profile_fsync_interval_s,
                compact_interval_s=config.profile_compact_interval_s,
            )
        except StoreLocked as exc:
            log.error("%s: is another edge running on this data directory?", exc)
            raise
        store.start()
        self.store = store
        log.info("shopper profiles in %s (%d stored)", directory, store.stored())

    async def close(self) -> None:
        if self.store is not None:
            store, self.store = self.store, None
            await store.close()

    async def lookup(self, shopper_id: str | None) -> Profile | None:
        """The shopper's stored profile, or None (no shopper, unknown, expired, no store, Redis slow or down)."""
        if shopper_id is None or self.store is None:
            return None
        pseudonym = self.pseudonym(shopper_id)
        return await self.store.get(pseudonym) if pseudonym is not None else None

    async def learn(self, events: Iterable[tuple[FeedbackEvent, str]], state: EdgeState | None, ts: float) -> None:
        """Apply each event of a shopper to their profile, stored before this returns (read-your-writes): its offer
        ids as the SKUs the region's catalog names (ids it does not know are taken as SKUs)."""
        if self.store is None:
            return
        for event, region in events:
            if event.shopper_id is None:
                continue
            catalog = state.catalogs.get(region) if state is not None else None
            items = tuple(item for item in skus(event.offer_ids, catalog) if len(item) <= MAX_ITEM_CHARS)
            pseudonym = self.pseudonym(event.shopper_id)
            if items and pseudonym is not None:
                await self.store.apply_event(pseudonym, ProfileEvent(event.type, items, ts))


def skus(ids: Sequence[str], catalog: RegionCatalog | None) -> tuple[str, ...]:
    """Offer ids or SKUs of a client, as SKUs (what profiles and the model key items by)."""
    if catalog is None:
        return tuple(item.upper() for item in ids)
    return tuple(catalog.sku_of(item) for item in ids)


def recent_events(record: Profile, now: float) -> tuple[tuple[str, ...], tuple[float, ...]]:
    """The profile's purchases and its cart (add_to_cart of the last CART_WINDOW_S), oldest first, with each one's
    age in days at `now`: the just-bought rule's input, and the context of a model that reads recent items."""
    items: list[str] = []
    ages: list[float] = []
    for event in record.recent:
        age_s = max(now - event.ts, 0.0)
        if event.kind == _PURCHASE or (event.kind == _ADD_TO_CART and age_s <= CART_WINDOW_S):
            items.append(event.item)
            ages.append(age_s / DAY_S)
    return tuple(items), tuple(ages)


def history_profile(record: Profile, extra: Iterable[tuple[str, float]] = ()) -> HistoryProfile:
    """The stored profile as the profile a model reads (models/profile.py: purchase counts, first and last seen,
    decayed frequency), plus `extra` (SKU, time) events (the cart) counted as purchases: `history_columns`."""
    return _as_history(history_columns(record, extra))


def _as_history(columns: tuple[list[str], list[int], list[float], list[float], list[float]]) -> HistoryProfile:
    skus, counts, firsts, lasts, decayeds = columns
    return HistoryProfile({sku: ItemSummary(*fields) for sku, *fields in zip(skus, counts, firsts, lasts, decayeds)})


def history_columns(
    record: Profile, extra: Iterable[tuple[str, float]] = ()
) -> tuple[list[str], list[int], list[float], list[float], list[float]]:
    """The history profile's items as columns, in its order: SKU, count, first and last seen, decayed frequency as
    of the last seen (one pass over the record, no object per item: what a hit's model input is built from).

    The purchases in the record's window of recent events are folded as training folds them (models.profile.update,
    in arrival order). An item with events older than the window (or from the origin's summary) takes the record's
    summary: its count and times, and its decayed frequency as of its last event. That summary counts every kind of
    event (a click too) and halves every 180 days where the model's decays by e every 180 days: close, not exact
    (docs/profiles.md). No item is evicted here: the model keeps its strongest P itself (models.features)."""
    in_window = Counter(event.item for event in record.recent)
    at: dict[str, int] = {}
    skus: list[str] = []
    counts: list[int] = []
    firsts: list[float] = []
    lasts: list[float] = []
    decayeds: list[float] = []
    for item, stats in record.items.items():
        if stats.count > in_window.get(item, 0):
            decayed = stats.decayed_at(stats.last_seen)
            if math.isfinite(decayed) and decayed > 0:
                at[item] = len(skus)
                skus.append(item)
                counts.append(stats.count)
                firsts.append(float(stats.first_seen))
                lasts.append(float(stats.last_seen))
                decayeds.append(decayed)
    summarized = set(at)
    folds = [(event.item, float(event.ts)) for event in record.recent if event.kind == _PURCHASE]
    for item, ts in (*((item, ts) for item, ts in folds if item not in summarized), *extra):
        # One purchase into an item's summary: models.profile.update's rule for the item, without its bookkeeping.
        row = at.get(item)
        if row is None:
            at[item] = len(skus)
            skus.append(item)
            counts.append(1)
            firsts.append(ts)
            lasts.append(ts)
            decayeds.append(1.0)
            continue
        counts[row] += 1
        firsts[row] = min(firsts[row], ts)
        if ts >= lasts[row]:
            decayeds[row] = decayeds[row] * math.exp((lasts[row] - ts) / _DECAY_S) + 1.0
            lasts[row] = ts
        else:
            decayeds[row] += math.exp((ts - lasts[row]) / _DECAY_S)
    return skus, counts, firsts, lasts, decayeds


def cart_of(record: Profile, now: float) -> list[tuple[str, float]]:
    """The profile's cart: its add_to_cart events of the last CART_WINDOW_S, as (SKU, time)."""
    return [
        (event.item, float(event.ts))
        for event in record.recent
        if event.kind == _ADD_TO_CART and now - event.ts <= CART_WINDOW_S
    ]


class HitInput:
    """A stored profile as a model reads it, built once for a record and the cart events it held: its history's
    columns (`history_columns`) and, per model that reads profiles, the time-independent part of that model's
    encoding; the history profile itself only when asked for."""

    __slots__ = ("record", "extra", "columns", "_prepared")

    def __init__(self, record: Profile, extra: tuple[tuple[str, float], ...]) -> None:
        self.record = record
        self.extra = extra
        self.columns = history_columns(record, extra)
        self._prepared: tuple[Any, Any] | None = None

    @property
    def history(self) -> HistoryProfile:
        return _as_history(self.columns)

    def encode(self, model: Any, now: float) -> Any:
        """The model's row for `now`: models.runtime.Ranker.encode_prepared, equal to encode_profile(history)."""
        entry = self._prepared
        if entry is None or entry[0] is not model:  # one model at a time: a new one replaces the old one's
            entry = self._prepared = (model, model.prepare_columns(*self.columns))
        return model.encode_prepared(entry[1], now)


class HitInputs:
    """A bounded LRU of HitInput, found by a key of the record's content and used only for an equal record (the
    same events and items) with the same cart events: any write (apply_event, put_summary, erase) changes or
    removes what the store returns, so read-your-writes holds with nothing to invalidate."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._entries: OrderedDict[tuple[Any, ...], HitInput] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, record: Profile, extra: tuple[tuple[str, float], ...]) -> HitInput:
        if self.capacity <= 0:
            return HitInput(record, extra)
        key = (record.recent[-1] if record.recent else None, len(record.recent), len(record.items))
        entry = self._entries.get(key)
        if entry is not None and entry.extra == extra and entry.record == record:
            self._entries.move_to_end(key)
            return entry
        entry = self._entries[key] = HitInput(record, extra)
        self._entries.move_to_end(key)
        if len(self._entries) > self.capacity:
            self._entries.popitem(last=False)
        return entry
