"""The ranker's features and linear score in numpy: the one definition that training and the ONNX graph share.

Features of item v given a context (item indices, most recent last, 0 = padding) and a region:
repetition — count, recency-decayed count, log(1 + count), is_repeat, repeat propensity (repeats only);
exploration — log(1 + item-kNN score: summed cosine of v to the context items' top-K neighbours);
popularity — regional log share, recent-trend log share, growth (recent vs all-time).
time — decayed count in days (needs each event's age), the shopper's recency and context size (repeats only).
Terms marked "_if_repeat" are multiplied by is_repeat, so a repeat and a new item get their own weights:
ranking items a shopper already buys and items new to them are different problems.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.statistics import ItemStatistics

FEATURE_NAMES = (
    "count",
    "recent_count",
    "log_count",
    "is_repeat",
    "repeat_propensity_if_repeat",
    "item_knn",
    "item_knn_if_repeat",
    "region_popularity",
    "trend_popularity",
    "trend_popularity_if_repeat",
    "growth",
    "growth_if_repeat",
    "decayed_count_days",
    "user_recency_if_repeat",
    "user_context_size_if_repeat",
)


def position_decay(context_length: int, decay: float) -> np.ndarray:
    """Weight of each context position: 1 for the most recent (last), decay**age before it."""
    return decay ** np.arange(context_length - 1, -1, -1, dtype=np.float64)


def scatter_rows(contexts: np.ndarray, values: np.ndarray, item_count: int) -> np.ndarray:
    """[S, V+1]: per row, sum of values [S, W] landing on item contexts [S, W]; column 0 zeroed."""
    size = item_count + 1
    rows = np.repeat(np.arange(contexts.shape[0]), contexts.shape[1])
    flat = np.bincount(rows * size + contexts.ravel(), weights=values.ravel(), minlength=contexts.shape[0] * size)
    profiles = flat.reshape(contexts.shape[0], size)
    profiles[:, 0] = 0.0
    return profiles


def context_features(
    statistics: ItemStatistics,
    contexts: np.ndarray,
    regions: np.ndarray,
    recent_decay: float,
    ages: np.ndarray,
    age_decay_days: float,
) -> np.ndarray:
    """float64 [F, S, V+1]: every FEATURE_NAMES feature of every item for contexts [S, L], ages [S, L] and regions [S]."""
    item_count = len(statistics.vocabulary.items)
    samples, length = contexts.shape
    valid = contexts > 0
    count = scatter_rows(contexts, valid.astype(np.float64), item_count)
    # One decay in days serves both the item's decayed count and the shopper's recency (newest event).
    event_recency = np.where(valid, np.exp(-np.asarray(ages, np.float64) / age_decay_days), 0.0)
    decayed_days = scatter_rows(contexts, event_recency, item_count)
    user_recency = event_recency.max(axis=1, initial=0.0)[:, None]
    events = valid.sum(axis=1)[:, None].astype(np.float64)
    recent = scatter_rows(contexts, valid * position_decay(length, recent_decay)[None, :], item_count)
    is_repeat = (count > 0).astype(np.float64)
    neighbours = statistics.neighbours[contexts].reshape(samples, -1)
    neighbour_weights = statistics.neighbour_weights[contexts].reshape(samples, -1)  # row 0 is zeros: padding adds 0
    item_knn = np.log1p(scatter_rows(neighbours, neighbour_weights, item_count))
    trend = np.broadcast_to(statistics.trend_log_popularity, count.shape)
    growth = np.broadcast_to(statistics.growth, count.shape)
    return np.stack(
        [
            count,
            recent,
            np.log1p(count),
            is_repeat,
            is_repeat * statistics.repeat_propensity,
            item_knn,
            item_knn * is_repeat,
            statistics.region_log_popularity[regions],
            trend,
            trend * is_repeat,
            growth,
            growth * is_repeat,
            decayed_days,
            is_repeat * user_recency,
            is_repeat * np.log1p(events),
        ]
    )


@dataclass(frozen=True)
class RankingModel:
    """Item statistics + the decay constants + learned linear weights over FEATURE_NAMES."""

    statistics: ItemStatistics
    context_length: int
    recent_decay: float
    age_decay_days: float
    weights: np.ndarray  # float64 [len(FEATURE_NAMES)]
    bias: float

    def features(self, contexts: np.ndarray, ages: np.ndarray, regions: np.ndarray) -> np.ndarray:
        """float64 [F, S, V+1] for contexts [S, L], their ages in days [S, L] and regions [S]."""
        return context_features(
            self.statistics, contexts, regions, self.recent_decay, ages, self.age_decay_days
        )

    def score_all_items(
        self, contexts: np.ndarray, ages: np.ndarray, regions: np.ndarray, *, batch: int = 256
    ) -> np.ndarray:
        """[S, V+1] scores of every item; column 0 is the unknown item."""
        item_count = len(self.statistics.vocabulary.items)
        scores = np.empty((len(contexts), item_count + 1))
        for start in range(0, len(contexts), batch):
            window = slice(start, start + batch)
            features = self.features(contexts[window], ages[window], regions[window])
            scores[window] = np.tensordot(self.weights, features, axes=1) + self.bias
        return scores

    def score_candidates(
        self, context: np.ndarray, ages: np.ndarray, region: int, candidates: np.ndarray
    ) -> np.ndarray:
        """[N] float64 scores for one request, the numpy twin of the ONNX graph (before penalty)."""
        scores = self.score_all_items(np.asarray(context)[None, :], np.asarray(ages, np.float64)[None, :], np.array([region]))
        return scores[0, np.asarray(candidates)]


def rank_reference(
    model: RankingModel,
    context: np.ndarray,
    ages: np.ndarray,
    region: int,
    candidates: np.ndarray,
    penalty: np.ndarray,
    k: int,
) -> tuple[np.ndarray, np.ndarray]:
    """What the ONNX graph must return: top-min(k, N) scores and positions, ties by lower position."""
    scores = model.score_candidates(context, ages, region, candidates) + penalty.astype(np.float64)
    order = np.argsort(-scores, kind="stable")[: max(0, min(k, len(candidates)))]
    return scores[order], order.astype(np.int64)
