"""The ranker's features and linear score in numpy: the one definition that training and the ONNX graph share.

The ranker reads a shopper's profile (models/profile.py) as P slots, one item each: its vocabulary index (0 =
padding or an unknown item), purchase count, days since its last and first purchase, and decayed frequency at the
request. Features of item v, from the slots holding v and from the region:
repetition — count, log(1 + count), is_repeat, decayed frequency and its log, log(1 + days since last purchase),
log(1 + mean gap between purchases), overdue = log((1 + days since last) / (1 + mean gap)) for items bought twice
or more (periodicity: is the shopper due to reorder it?), the item's repeat propensity;
exploration — log(1 + item-kNN score: summed cosine of v to the profile items' top-K neighbours, weighted by count);
popularity — regional log share, recent-trend log share, growth (recent vs all-time);
the shopper — recency of their newest purchase, log events and log tenure (repeats only).
Terms marked "_if_repeat" are multiplied by is_repeat, so a repeat and a new item get their own weights.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from models.profile import DAY_SECONDS, DECAY_DAYS, Profile
from models.statistics import ItemStatistics

FEATURE_NAMES = (
    "count",
    "log_count",
    "is_repeat",
    "decayed",
    "log_decayed",
    "log_days_since_last_if_repeat",
    "log_gap_if_repeat",
    "overdue_if_repeat",
    "repeat_propensity_if_repeat",
    "item_knn",
    "item_knn_if_repeat",
    "region_popularity",
    "trend_popularity",
    "trend_popularity_if_repeat",
    "growth",
    "growth_if_repeat",
    "user_recency_if_repeat",
    "user_events_if_repeat",
    "user_tenure_if_repeat",
)
# The features computed per slot from its own fields (the rest come from item tables or the whole profile).
SLOT_FEATURES = FEATURE_NAMES[:8]


@dataclass(frozen=True)
class ProfileSlots:
    """Profiles as the graph reads them: [S, P] arrays, one row per shopper, filled slots last (padding: item 0)."""

    items: np.ndarray  # int64
    counts: np.ndarray  # float
    days_since_last: np.ndarray  # float
    days_since_first: np.ndarray  # float
    decayed: np.ndarray  # float: decayed frequency at the request

    def row(self, index: int) -> ProfileSlots:
        return ProfileSlots(*(getattr(self, name)[index : index + 1] for name in SLOT_FIELDS))

    def width(self) -> int:
        return self.items.shape[1]


SLOT_FIELDS = ("items", "counts", "days_since_last", "days_since_first", "decayed")


def encode_profile(profile: Profile, now: float, item_index: dict[str, int], width: int) -> tuple[np.ndarray, ...]:
    """One profile's [width] slot arrays (items, counts, days since last and first, decayed at `now`), float32 stats.

    Items are laid out strongest (highest decayed frequency) last, so a profile of more than `width` items keeps its
    `width` strongest; unknown StockCodes take item 0, which the features ignore.
    """
    # Each column is built as a list and written once: a numpy scalar write per slot and field cost about 0.1 µs
    # each, the most of a request's profile encoding (the sort is stable, so ties keep the profile's order).
    scored = [(summary.decayed_at(now), sku, summary) for sku, summary in profile.items.items()] if width else []
    scored.sort(key=_strength)
    kept = scored[-width:] if width else []
    arrays = (np.zeros(width, np.int64),) + tuple(np.zeros(width, np.float32) for _ in range(4))
    if kept:
        start = width - len(kept)
        get = item_index.get
        arrays[0][start:] = [get(sku, 0) for _, sku, _ in kept]
        arrays[1][start:] = [summary.count for _, _, summary in kept]
        arrays[2][start:] = [max(now - summary.last_seen, 0.0) / DAY_SECONDS for _, _, summary in kept]
        arrays[3][start:] = [max(now - summary.first_seen, 0.0) / DAY_SECONDS for _, _, summary in kept]
        arrays[4][start:] = [decayed for decayed, _, _ in kept]
    return arrays


def _strength(entry: tuple[float, str, object]) -> float:
    return entry[0]


@dataclass(frozen=True)
class PreparedProfile:
    """A profile's columns that do not depend on the request's time, in the profile's order, for one vocabulary:
    what `encode_prepared` turns into the slot arrays of any `now` (a shopper's repeat requests reuse it)."""

    items: np.ndarray  # int64 [n]: vocabulary index, 0 = unknown
    columns: np.ndarray  # float64 [3, n]: count, last_seen, first_seen
    decayed_pairs: tuple[tuple[float, float], ...]  # (decayed as of last_seen, last_seen) per item


def prepare_profile(profile: Profile, item_index: dict[str, int]) -> PreparedProfile:
    summaries = list(profile.items.values())
    return prepare_columns(
        list(profile.items),
        [summary.count for summary in summaries],
        [summary.first_seen for summary in summaries],
        [summary.last_seen for summary in summaries],
        [summary.decayed for summary in summaries],
        item_index,
    )


def prepare_columns(
    skus: list[str],
    counts: list[int],
    first_seen: list[float],
    last_seen: list[float],
    decayed: list[float],
    item_index: dict[str, int],
) -> PreparedProfile:
    """A profile given as columns (SKU, count, first and last seen, decayed as of last seen), prepared."""
    get = item_index.get
    return PreparedProfile(
        np.array([get(sku, 0) for sku in skus], np.int64),
        np.array([counts, last_seen, first_seen], np.float64).reshape(3, len(skus)),
        tuple(zip(decayed, last_seen)),
    )


_DECAY_SECONDS = DECAY_DAYS * DAY_SECONDS


def encode_prepared(prepared: PreparedProfile, now: float, width: int) -> tuple[np.ndarray, ...]:
    """`encode_profile` of the prepared profile, bit for bit: the decayed frequency at `now` is computed per item
    as ItemSummary.decayed_at computes it (math.exp, not numpy's), the stable argsort orders as the stable sort
    does, and the day columns are the same float64 operations, element-wise, rounded once to float32. Few numpy
    calls (each costs about a microsecond, most of this function): the stats are one [4, width] block."""
    items = np.zeros(width, np.int64)
    stats = np.zeros((4, width), np.float32)
    if width and len(prepared.items):
        exp = math.exp
        decayed = np.array([d * exp(-max(now - last, 0.0) / _DECAY_SECONDS) for d, last in prepared.decayed_pairs])
        kept = np.argsort(decayed, kind="stable")[-width:]
        start = width - len(kept)
        items[start:] = prepared.items[kept]
        block = prepared.columns[:, kept]
        block[1:] = np.maximum(now - block[1:], 0.0)
        block[1:] /= DAY_SECONDS
        stats[:3, start:] = block
        stats[3, start:] = decayed[kept]
    return items, stats[0], stats[1], stats[2], stats[3]


def scatter_rows(indices: np.ndarray, values: np.ndarray, item_count: int) -> np.ndarray:
    """[S, V+1]: per row, sum of values [S, W] landing on item indices [S, W]; column 0 zeroed."""
    size = item_count + 1
    rows = np.repeat(np.arange(indices.shape[0]), indices.shape[1])
    flat = np.bincount(rows * size + indices.ravel(), weights=values.ravel(), minlength=indices.shape[0] * size)
    out = flat.reshape(indices.shape[0], size)
    out[:, 0] = 0.0
    return out


def slot_features(slots: ProfileSlots) -> tuple[np.ndarray, ...]:
    """float64 [S, P] each of SLOT_FEATURES, zero on padding slots, and the known-slot mask."""
    known = (slots.items > 0).astype(np.float64)
    count = np.asarray(slots.counts, np.float64) * known
    since_last = np.asarray(slots.days_since_last, np.float64) * known
    since_first = np.asarray(slots.days_since_first, np.float64) * known
    decayed = np.asarray(slots.decayed, np.float64) * known
    log_last = np.log1p(since_last)
    log_gap = np.log1p((since_first - since_last) / np.maximum(count - 1.0, 1.0))
    several = (count > 1.5).astype(np.float64)
    return (
        count,
        np.log1p(count),
        known,
        decayed,
        np.log1p(decayed),
        log_last,
        log_gap,
        several * (log_last - log_gap),
    ), known


def user_features(slots: ProfileSlots) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """float64 [S] each: recency exp(-days since the newest purchase / DECAY_DAYS), log(1 + events), log(1 + tenure)."""
    known = slots.items > 0
    recency = np.where(known, np.exp(-np.asarray(slots.days_since_last, np.float64) / DECAY_DAYS), 0.0)
    events = np.where(known, np.asarray(slots.counts, np.float64), 0.0).sum(axis=1)
    tenure = np.where(known, np.asarray(slots.days_since_first, np.float64), 0.0).max(axis=1, initial=0.0)
    return recency.max(axis=1, initial=0.0), np.log1p(events), np.log1p(tenure)


def context_features(statistics: ItemStatistics, slots: ProfileSlots, regions: np.ndarray) -> np.ndarray:
    """float64 [F, S, V+1]: every FEATURE_NAMES feature of every item for profile slots [S, P] and regions [S]."""
    item_count = len(statistics.vocabulary.items)
    samples = slots.items.shape[0]
    per_slot, _ = slot_features(slots)
    scattered = [scatter_rows(slots.items, values, item_count) for values in per_slot]
    is_repeat = scattered[2]
    neighbours = statistics.neighbours[slots.items].reshape(samples, -1)
    weights = (statistics.neighbour_weights[slots.items] * per_slot[0][:, :, None]).reshape(samples, -1)
    item_knn = np.log1p(scatter_rows(neighbours, weights, item_count))  # row 0 of the tables is zeros: padding adds 0
    trend = np.broadcast_to(statistics.trend_log_popularity, is_repeat.shape)
    growth = np.broadcast_to(statistics.growth, is_repeat.shape)
    recency, events, tenure = user_features(slots)
    return np.stack(
        scattered
        + [
            is_repeat * statistics.repeat_propensity,
            item_knn,
            item_knn * is_repeat,
            statistics.region_log_popularity[regions],
            trend,
            trend * is_repeat,
            growth,
            growth * is_repeat,
            is_repeat * recency[:, None],
            is_repeat * events[:, None],
            is_repeat * tenure[:, None],
        ]
    )


@dataclass(frozen=True)
class RankingModel:
    """Item statistics + the profile width + learned linear weights over FEATURE_NAMES."""

    statistics: ItemStatistics
    slots: int  # P: profile items the graph reads
    weights: np.ndarray  # float64 [len(FEATURE_NAMES)]
    bias: float

    def features(self, slots: ProfileSlots, regions: np.ndarray) -> np.ndarray:
        return context_features(self.statistics, slots, regions)

    def score_all_items(self, slots: ProfileSlots, regions: np.ndarray, *, batch: int = 256) -> np.ndarray:
        """[S, V+1] scores of every item; column 0 is the unknown item."""
        item_count = len(self.statistics.vocabulary.items)
        rows = slots.items.shape[0]
        scores = np.empty((rows, item_count + 1))
        for start in range(0, rows, batch):
            window = slice(start, start + batch)
            part = ProfileSlots(*(getattr(slots, name)[window] for name in SLOT_FIELDS))
            scores[window] = np.tensordot(self.weights, self.features(part, regions[window]), axes=1) + self.bias
        return scores

    def score_candidates(self, slots: ProfileSlots, region: int, candidates: np.ndarray) -> np.ndarray:
        """[N] float64 scores for one request (slots of one row), the numpy twin of the ONNX graph (before penalty)."""
        return self.score_all_items(slots, np.array([region]))[0, np.asarray(candidates)]


def rank_reference(
    model: RankingModel, slots: ProfileSlots, region: int, candidates: np.ndarray, penalty: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """What the ONNX graph must return: top-min(k, N) scores and positions, ties by lower position."""
    scores = model.score_candidates(slots, region, candidates) + penalty.astype(np.float64)
    order = np.argsort(-scores, kind="stable")[: max(0, min(k, len(candidates)))]
    return scores[order], order.astype(np.int64)
