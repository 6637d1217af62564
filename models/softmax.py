"""The ranker's fit: Newton's method on a multi-positive sampled softmax over each shopper's candidate group."""

from __future__ import annotations

from typing import Protocol, Sequence

import numpy as np

from models.data import DataError


class Groups(Protocol):
    """Candidate rows of one cut: features [P, F], labels [P], log importance weights [P], group sizes [G]."""

    features: np.ndarray
    labels: np.ndarray
    log_weights: np.ndarray
    group_sizes: np.ndarray


def fit_softmax_ranker(samples: Sequence[Groups], l2: float) -> tuple[np.ndarray, float]:
    """Newton's method on the mean multi-positive softmax loss (convex), standardised features.

    Per group: -mean over targets of s_i + logsumexp_j(s_j + log w_j). The bias cancels in a softmax,
    so it is returned as 0; ranking needs only the weights.
    """
    features = np.concatenate([s.features for s in samples])
    labels = np.concatenate([s.labels for s in samples])
    log_weights = np.concatenate([s.log_weights for s in samples])
    sizes = np.concatenate([s.group_sizes for s in samples])
    if len(sizes) == 0:
        raise DataError("too little repeat-customer history to train on")
    starts = np.r_[0, np.cumsum(sizes)[:-1]]
    group = np.repeat(np.arange(len(sizes)), sizes)
    positives = np.add.reduceat(labels, starts)
    mean, scale = features.mean(axis=0), features.std(axis=0) + 1e-9
    design = (features - mean) / scale
    target_share = labels / positives[group]
    groups = len(sizes)

    def loss_and_probabilities(coefficients: np.ndarray) -> tuple[float, np.ndarray]:
        logits = design @ coefficients + log_weights
        peak = np.maximum.reduceat(logits, starts)
        exponentials = np.exp(logits - peak[group])
        totals = np.add.reduceat(exponentials, starts)
        log_partition = peak + np.log(totals)
        loss = (log_partition.sum() - (target_share * (logits - log_weights)).sum()) / groups
        return loss + l2 * coefficients @ coefficients, exponentials / totals[group]

    coefficients = np.zeros(design.shape[1])
    loss, probabilities = loss_and_probabilities(coefficients)
    for _ in range(50):
        gradient = design.T @ (probabilities - target_share) / groups + 2 * l2 * coefficients
        group_means = np.add.reduceat(design * probabilities[:, None], starts)
        hessian = ((design * probabilities[:, None]).T @ design - group_means.T @ group_means) / groups
        hessian += 2 * l2 * np.eye(len(coefficients))
        step = np.linalg.solve(hessian, gradient)
        size = 1.0
        while True:  # backtracking keeps Newton monotone far from the optimum
            trial = coefficients - size * step
            trial_loss, trial_probabilities = loss_and_probabilities(trial)
            if trial_loss <= loss + 1e-12 or size < 1e-4:
                break
            size /= 2
        coefficients, loss, probabilities = trial, trial_loss, trial_probabilities
        if np.abs(size * step).max() < 1e-7:
            break
    weights = coefficients / scale
    return weights, 0.0
