"""Top-k ranking metrics over users: recall, nDCG, MAP, coverage and repeat share."""

from __future__ import annotations

import numpy as np


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """[U, k] column indices of the k best scores per row, best first (ties: lower index first)."""
    k = min(k, scores.shape[1])
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    part_scores = np.take_along_axis(scores, part, axis=1)
    order = np.lexsort((part, -part_scores), axis=1)
    return np.take_along_axis(part, order, axis=1)


def ranking_metrics(
    top: np.ndarray, targets: np.ndarray, history: np.ndarray | None = None, catalog_size: int | None = None
) -> dict[str, float]:
    """Mean metrics@k for top [U, k] item indices against boolean targets [U, V+1].

    recall@k divides hits by min(k, |targets|) so that a perfect list scores 1 for every user.
    repeat_share@k is the share of recommended items the user already bought (history [U, V+1]).
    """
    users, k = top.shape
    if users == 0:
        return {}
    rows = np.arange(users)[:, None]
    hits = targets[rows, top].astype(np.float64)
    relevant = np.minimum(targets.sum(axis=1), k).astype(np.float64)
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    ideal = np.cumsum(discounts)[np.maximum(relevant.astype(int) - 1, 0)]
    precision_at = np.cumsum(hits, axis=1) / np.arange(1, k + 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        recall = np.where(relevant > 0, hits.sum(axis=1) / relevant, 0.0)
        ndcg = np.where(relevant > 0, (hits * discounts).sum(axis=1) / ideal, 0.0)
        average_precision = np.where(relevant > 0, (precision_at * hits).sum(axis=1) / relevant, 0.0)
    metrics = {
        f"recall@{k}": float(recall.mean()),
        f"ndcg@{k}": float(ndcg.mean()),
        f"map@{k}": float(average_precision.mean()),
    }
    if catalog_size:
        metrics[f"coverage@{k}"] = float(len(np.unique(top)) / catalog_size)
    if history is not None:
        metrics[f"repeat_share@{k}"] = float(history[rows, top].mean())
    return metrics
