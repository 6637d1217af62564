"""Item statistics the ranker reads: popularity (global, regional, recent trend), item-kNN neighbours and
repeat propensity."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.data import NO_CUSTOMER, NO_REGION, Transactions

# Small regions borrow strength from the global distribution: this many pseudo-purchases.
REGION_SMOOTHING = 20.0
# The recent-trend share shrinks toward the global share with this many pseudo-purchases.
TREND_SMOOTHING = 50.0
# Growth compares recent sales with what the global share predicts, with this many pseudo-sales on both sides.
GROWTH_SMOOTHING = 3.0


@dataclass(frozen=True)
class Vocabulary:
    """Index 0 is padding/unknown; item index i+1 is items[i], region index i+1 is regions[i]."""

    items: tuple[str, ...]
    regions: tuple[str, ...]

    def item_index(self) -> dict[str, int]:
        return {code: position + 1 for position, code in enumerate(self.items)}

    def region_index(self) -> dict[str, int]:
        return {code: position + 1 for position, code in enumerate(self.regions)}

    def encode_items(self, stock_codes: np.ndarray) -> np.ndarray:
        lookup = self.item_index()
        return np.array([lookup.get(code, 0) for code in stock_codes.tolist()], dtype=np.int64)

    def encode_regions(self, regions: np.ndarray) -> np.ndarray:
        lookup = self.region_index()
        return np.array([lookup.get(code, 0) for code in regions.tolist()], dtype=np.int64)


def vocabulary_of(purchases: Transactions) -> Vocabulary:
    """Every purchased item and every market that bought something, sorted for stable indices."""
    regions = sorted(set(purchases.region.tolist()) - {NO_REGION})
    return Vocabulary(items=tuple(sorted(set(purchases.stock_code.tolist()))), regions=tuple(regions))


@dataclass(frozen=True)
class ItemStatistics:
    """Per-item tables indexed like the Vocabulary; row/column 0 is the unknown item or region."""

    vocabulary: Vocabulary
    global_log_popularity: np.ndarray  # float64 [V+1]
    region_log_popularity: np.ndarray  # float64 [R+1, V+1]; row 0 = global, column 0 = unseen item
    trend_log_popularity: np.ndarray  # float64 [V+1]: smoothed log share over the last trend window
    growth: np.ndarray  # float64 [V+1]: log(recent sales / sales the global share predicts); 0 for item 0
    repeat_propensity: np.ndarray  # float64 [V+1]: smoothed log share of an item's buyers who bought it again
    neighbours: np.ndarray  # int64 [V+1, K]: top-K cosine co-purchase neighbours; row 0 points at 0
    neighbour_weights: np.ndarray  # float64 [V+1, K]: their cosine similarity; row 0 zeros


def log_popularity(
    vocabulary: Vocabulary, item_indices: np.ndarray, region_indices: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Add-one smoothed global log share, and per-region log share shrunk toward the global one."""
    size = len(vocabulary.items) + 1
    known = item_indices > 0
    global_counts = np.bincount(item_indices[known], minlength=size).astype(np.float64)
    global_counts[0] = 0.0
    global_share = (global_counts + 1.0) / (global_counts.sum() + size)
    region_rows = [np.log(global_share)]
    for region in range(1, len(vocabulary.regions) + 1):
        in_region = known & (region_indices == region)
        counts = np.bincount(item_indices[in_region], minlength=size).astype(np.float64)
        counts[0] = 0.0
        share = (counts + REGION_SMOOTHING * global_share) / (counts.sum() + REGION_SMOOTHING)
        region_rows.append(np.log(share))
    region_log = np.stack(region_rows)
    # The unknown item is "never seen" everywhere, so its base score does not depend on region.
    region_log[:, 0] = np.log(global_share[0])
    return np.log(global_share), region_log


def customer_item_counts(customer_ids: np.ndarray, item_indices: np.ndarray, item_count: int) -> np.ndarray:
    """float32 [C, V+1] purchase events per customer and item (unknown items and anonymous rows dropped)."""
    keep = (item_indices > 0) & (customer_ids != NO_CUSTOMER)
    _, rows = np.unique(customer_ids[keep], return_inverse=True)
    size = item_count + 1
    flat = np.bincount(rows * size + item_indices[keep], minlength=(rows.max() + 1 if len(rows) else 0) * size)
    return flat.reshape(-1, size).astype(np.float32)


def item_neighbours(counts: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k cosine neighbours of every item over who bought it (binary customer x item)."""
    bought = (counts > 0).astype(np.float32)
    buyers = bought.sum(axis=0)
    similarity = bought.T @ bought
    norms = np.sqrt(np.outer(buyers, buyers))
    similarity = np.divide(similarity, norms, out=np.zeros_like(similarity), where=norms > 0)
    np.fill_diagonal(similarity, 0.0)
    similarity[0, :] = 0.0
    similarity[:, 0] = 0.0
    k = min(k, similarity.shape[1] - 1)
    neighbours = np.argpartition(-similarity, k - 1, axis=1)[:, :k] if k > 0 else np.zeros((len(similarity), 0), int)
    weights = np.take_along_axis(similarity, neighbours, axis=1).astype(np.float64)
    # Zero-weight slots point at the unknown item, so a table row never names an unrelated item.
    neighbours = np.where(weights > 0, neighbours, 0).astype(np.int64)
    return neighbours, weights


def repeat_propensity(counts: np.ndarray) -> np.ndarray:
    """log((buyers who bought the item in 2+ invoices + 1) / (buyers + 5)): how habitual an item is."""
    buyers = (counts > 0).sum(axis=0).astype(np.float64)
    repeaters = (counts >= 2).sum(axis=0).astype(np.float64)
    propensity = np.log((repeaters + 1.0) / (buyers + 5.0))
    propensity[0] = 0.0
    return propensity


def trend(
    item_indices: np.ndarray, times: np.ndarray, until: np.datetime64, days: int, global_log: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Smoothed log share over the `days` before `until`, and growth against the all-time share."""
    recent = (item_indices > 0) & (times >= until - np.timedelta64(days, "D")) & (times < until)
    counts = np.bincount(item_indices[recent], minlength=len(global_log)).astype(np.float64)
    counts[0] = 0.0
    total = counts.sum()
    global_share = np.exp(global_log)
    trend_log = np.log((counts + TREND_SMOOTHING * global_share) / (total + TREND_SMOOTHING))
    growth = np.log((counts + GROWTH_SMOOTHING) / (global_share * total + GROWTH_SMOOTHING))
    trend_log[0] = global_log[0]  # the unknown item has no trend: its score must not move
    growth[0] = 0.0
    return trend_log, growth


def fit_item_statistics(
    vocabulary: Vocabulary,
    purchases: Transactions,
    events: Transactions,
    *,
    neighbours: int = 10,
    trend_days: int = 28,
    until: np.datetime64 | None = None,
) -> ItemStatistics:
    """Popularity and trend from all purchases (customer or not), neighbours and propensity from events.

    `until` ends the trend window (default: just after the last purchase); rows after it are the caller's to drop.
    """
    item_indices = vocabulary.encode_items(purchases.stock_code)
    global_log, region_log = log_popularity(vocabulary, item_indices, vocabulary.encode_regions(purchases.region))
    if until is None:
        until = (purchases.invoiced_at.max() if len(purchases) else np.datetime64(0, "s")) + np.timedelta64(1, "s")
    trend_log, growth = trend(item_indices, purchases.invoiced_at, until, trend_days, global_log)
    counts = customer_item_counts(events.customer_id, vocabulary.encode_items(events.stock_code), len(vocabulary.items))
    neighbour_index, neighbour_weights = item_neighbours(counts, neighbours)
    return ItemStatistics(
        vocabulary,
        global_log,
        region_log,
        trend_log,
        growth,
        repeat_propensity(counts),
        neighbour_index,
        neighbour_weights,
    )
