"""The ranker's features and linear score in numpy: the one definition that training and the ONNX graph share.

Features of item v given a context (item indices, most recent last, 0 = padding) and a region:
repetition — count, recency-decayed count, log(1 + count), is_repeat, repeat propensity (repeats only);
exploration — log(1 + item-kNN score: summed cosine of v to the context items' top-K neighbours);
popularity — regional log share, recent-trend log share, growth (recent vs all-time).
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
    statistics: ItemStatistics, contexts: np.ndarray, regions: np.ndarray, recent_decay: float
) -> np.ndarray:
    """float64 [F, S, V+1]: every FEATURE_NAMES feature of every item for contexts [S, L] and regions [S]."""
    item_count = len(statistics.vocabulary.items)
    samples, length = contexts.shape
    valid = contexts > 0
    count = scatter_rows(contexts, valid.astype(np.float64), item_count)
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
        ]
    )


@dataclass(frozen=True)
class RankingModel:
    """Item statistics + the recency decay + learned linear weights over FEATURE_NAMES."""

    statistics: ItemStatistics
    context_length: int
    recent_decay: float
    weights: np.ndarray  # float64 [len(FEATURE_NAMES)]
    bias: float

    def score_all_items(self, contexts: np.ndarray, regions: np.ndarray, *, batch: int = 256) -> np.ndarray:
        """[S, V+1] scores of every item; column 0 is the unknown item."""
        item_count = len(self.statistics.vocabulary.items)
        scores = np.empty((len(contexts), item_count + 1))
        for start in range(0, len(contexts), batch):
            features = context_features(
                self.statistics, contexts[start : start + batch], regions[start : start + batch], self.recent_decay
            )
            scores[start : start + batch] = np.tensordot(self.weights, features, axes=1) + self.bias
        return scores

    def score_candidates(self, context: np.ndarray, region: int, candidates: np.ndarray) -> np.ndarray:
        """[N] float64 scores for one request, the numpy twin of the ONNX graph (before penalty)."""
        return self.score_all_items(np.asarray(context)[None, :], np.array([region]))[0, np.asarray(candidates)]


def rank_reference(
    model: RankingModel, context: np.ndarray, region: int, candidates: np.ndarray, penalty: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """What the ONNX graph must return: top-min(k, N) scores and positions, ties by lower position."""
    scores = model.score_candidates(context, region, candidates) + penalty.astype(np.float64)
    order = np.argsort(-scores, kind="stable")[: max(0, min(k, len(candidates)))]
    return scores[order], order.astype(np.int64)
