"""The ranker's features and linear score in numpy: the reference that training and the ONNX graph share.

Features of candidate c given a context (item indices, most recent last, 0 = padding):
repeat = decayed count of c in the context; affinity = E[c] · decayed sum of context embeddings;
region_popularity and global_popularity = smoothed log shares of c.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.statistics import ItemStatistics

FEATURE_NAMES = ("repeat", "affinity", "region_popularity", "global_popularity")


def position_decay(context_length: int, decay: float) -> np.ndarray:
    """Weight of each context position: 1 for the most recent (last), decay**age before it."""
    return decay ** np.arange(context_length - 1, -1, -1, dtype=np.float64)


def context_profiles(contexts: np.ndarray, weights: np.ndarray, item_count: int) -> np.ndarray:
    """Dense [S, V+1] decayed counts of each item in each context; padding (0) never counts."""
    profiles = np.zeros((contexts.shape[0], item_count + 1), dtype=np.float64)
    rows = np.repeat(np.arange(contexts.shape[0]), contexts.shape[1])
    np.add.at(profiles, (rows, contexts.ravel()), np.tile(weights, contexts.shape[0]))
    profiles[:, 0] = 0.0
    return profiles


@dataclass(frozen=True)
class RankingModel:
    """Item statistics + per-feature position decays + learned linear weights over FEATURE_NAMES."""

    statistics: ItemStatistics
    context_length: int
    repeat_decay: float
    affinity_decay: float
    weights: np.ndarray  # float64 [len(FEATURE_NAMES)]
    bias: float

    @property
    def repeat_position_weights(self) -> np.ndarray:
        return position_decay(self.context_length, self.repeat_decay)

    @property
    def affinity_position_weights(self) -> np.ndarray:
        return position_decay(self.context_length, self.affinity_decay)

    def pair_features(
        self, contexts: np.ndarray, regions: np.ndarray, sample_of_pair: np.ndarray, candidate_of_pair: np.ndarray
    ) -> np.ndarray:
        """[P, 4] features for (sample, candidate) pairs; contexts [S, L], regions [S]."""
        stats = self.statistics
        pair_contexts = contexts[sample_of_pair]
        is_repeat = (pair_contexts == candidate_of_pair[:, None]) & (pair_contexts != 0)
        repeat = is_repeat.astype(np.float64) @ self.repeat_position_weights
        context_vectors = np.einsum("l,sld->sd", self.affinity_position_weights, stats.embeddings[contexts])
        affinity = np.einsum("pd,pd->p", context_vectors[sample_of_pair], stats.embeddings[candidate_of_pair])
        region_popularity = stats.region_log_popularity[regions[sample_of_pair], candidate_of_pair]
        global_popularity = stats.global_log_popularity[candidate_of_pair]
        return np.stack([repeat, affinity, region_popularity, global_popularity], axis=1)

    def all_item_features(self, contexts: np.ndarray, regions: np.ndarray) -> list[np.ndarray]:
        """The same four features for every item of the vocabulary at once: each [S, V+1]."""
        stats = self.statistics
        item_count = len(stats.vocabulary.items)
        repeat = context_profiles(contexts, self.repeat_position_weights, item_count)
        context_vectors = np.einsum("l,sld->sd", self.affinity_position_weights, stats.embeddings[contexts])
        affinity = context_vectors @ stats.embeddings.T
        region_popularity = stats.region_log_popularity[regions]
        global_popularity = np.broadcast_to(stats.global_log_popularity, repeat.shape)
        return [repeat, affinity, region_popularity, global_popularity]

    def score_all_items(self, contexts: np.ndarray, regions: np.ndarray) -> np.ndarray:
        """[S, V+1] scores of every item; column 0 is the unknown item."""
        features = self.all_item_features(contexts, regions)
        return sum(weight * feature for weight, feature in zip(self.weights, features)) + self.bias

    def score_candidates(self, context: np.ndarray, region: int, candidates: np.ndarray) -> np.ndarray:
        """[N] float64 scores for one request, the numpy twin of the ONNX graph (before penalty)."""
        samples = np.zeros(len(candidates), dtype=np.int64)
        features = self.pair_features(context[None, :], np.array([region]), samples, np.asarray(candidates))
        return features @ self.weights + self.bias


def rank_reference(
    model: RankingModel, context: np.ndarray, region: int, candidates: np.ndarray, penalty: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """What the ONNX graph must return: top-min(k, N) scores and positions, ties by lower position."""
    scores = model.score_candidates(context, region, candidates) + penalty.astype(np.float64)
    order = np.argsort(-scores, kind="stable")[: max(0, min(k, len(candidates)))]
    return scores[order], order.astype(np.int64)
