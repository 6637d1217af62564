"""Train the ranker on Online Retail data and write a bundle (model.onnx + manifest.json).

Time-ordered split: item statistics from the first 60% of purchases, the logistic regression
from next-invoice samples up to 85%, held-out metrics on the rest; the shipped statistics are refit on all.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from models.bundle import golden_case, write_bundle
from models.data import DataError, Transactions, clean_purchases, purchase_events, read_transactions
from models.export import build_ranking_graph, signature
from models.features import FEATURE_NAMES, RankingModel, rank_reference
from models.metrics import ranking_metrics, top_k
from models.statistics import Vocabulary, fit_item_statistics, vocabulary_of

DEFAULT_CONTEXT_LENGTH = 50


@dataclass(frozen=True)
class TrainingConfig:
    """Every knob of training in one place; recorded in the manifest."""

    context_length: int = DEFAULT_CONTEXT_LENGTH
    # Repeats are habits, so old purchases still count; taste drifts, so affinity favours the recent.
    repeat_decay: float = 1.0
    affinity_decay: float = 0.9
    embedding_dim: int = 32
    statistics_until: float = 0.6  # quantile of purchase times
    validation_from: float = 0.85
    max_positives_per_invoice: int = 20
    negatives_per_positive: int = 4
    l2: float = 1e-2
    seed: int = 0


@dataclass(frozen=True)
class CustomerEvents:
    """Purchase events as vocabulary indices, grouped by customer (sorted by customer, then time)."""

    items: np.ndarray  # int64 [E]
    regions: np.ndarray  # int64 [E]
    times: np.ndarray  # datetime64[s] [E]
    customer_start: np.ndarray  # int64 [E]: first event position of the same customer
    invoice_start: np.ndarray  # int64 [G]: first event of each (customer, invoice) group
    invoice_end: np.ndarray  # int64 [G]: one past its last event


def index_events(events: Transactions, vocabulary: Vocabulary) -> CustomerEvents:
    positions = np.arange(len(events))
    new_customer = np.r_[True, events.customer_id[1:] != events.customer_id[:-1]]
    new_invoice = new_customer | np.r_[True, events.invoice_no[1:] != events.invoice_no[:-1]]
    invoice_start = positions[new_invoice]
    return CustomerEvents(
        items=vocabulary.encode_items(events.stock_code),
        regions=vocabulary.encode_regions(events.region),
        times=events.invoiced_at,
        customer_start=np.maximum.accumulate(np.where(new_customer, positions, 0)),
        invoice_start=invoice_start,
        invoice_end=np.r_[invoice_start[1:], len(events)],
    )


def contexts_before(events: CustomerEvents, positions: np.ndarray, context_length: int) -> np.ndarray:
    """[S, L] the customer's last L events before each position, left-padded with 0."""
    window = positions[:, None] - context_length + np.arange(context_length)
    inside = window >= events.customer_start[positions][:, None]
    return np.where(inside, events.items[np.clip(window, 0, None)], 0)


def fit_logistic_regression(features: np.ndarray, labels: np.ndarray, l2: float) -> tuple[np.ndarray, float]:
    """Newton's method on standardised features; returns weights and bias on the raw scale."""
    mean, scale = features.mean(axis=0), features.std(axis=0) + 1e-9
    design = np.c_[np.ones(len(features)), (features - mean) / scale]
    coefficients = np.zeros(design.shape[1])
    penalty = np.r_[0.0, np.full(features.shape[1], l2 * len(features))]
    for _ in range(30):
        probability = 1.0 / (1.0 + np.exp(-design @ coefficients))
        gradient = design.T @ (probability - labels) + penalty * coefficients
        hessian = (design * (probability * (1 - probability))[:, None]).T @ design + np.diag(penalty + 1e-9)
        step = np.linalg.solve(hessian, gradient)
        coefficients -= step
        if np.abs(step).max() < 1e-8:
            break
    weights = coefficients[1:] / scale
    return weights, float(coefficients[0] - (weights * mean).sum())


def training_pairs(
    events: CustomerEvents, groups: np.ndarray, config: TrainingConfig, sampling_weights: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Next-invoice samples: (contexts, regions, sample_of_pair, candidate_of_pair, label)."""
    item_count = len(sampling_weights) - 1
    popular = sampling_weights / sampling_weights.sum()
    samples, candidates, labels = [], [], []
    for sample, group in enumerate(groups.tolist()):
        bought = np.unique(events.items[events.invoice_start[group] : events.invoice_end[group]])
        bought = bought[bought > 0]
        if len(bought) > config.max_positives_per_invoice:
            bought = rng.choice(bought, config.max_positives_per_invoice, replace=False)
        negatives_count = len(bought) * config.negatives_per_positive
        # Half uniform, half popularity-shaped negatives: the model must beat popularity, not just find it.
        negatives = np.r_[
            rng.integers(1, item_count + 1, negatives_count // 2),
            rng.choice(item_count + 1, negatives_count - negatives_count // 2, p=popular),
        ]
        negatives = negatives[~np.isin(negatives, bought)]
        candidates += [bought, negatives]
        labels += [np.ones(len(bought)), np.zeros(len(negatives))]
        samples.append(np.full(len(bought) + len(negatives), sample))
    starts = events.invoice_start[groups]
    contexts = contexts_before(events, starts, config.context_length)
    return contexts, events.regions[starts], np.concatenate(samples), np.concatenate(candidates), np.concatenate(labels)


def _statistics_before(vocabulary, purchases, events, cut, config):
    return fit_item_statistics(
        vocabulary,
        purchases.select(purchases.invoiced_at < cut),
        events.select(events.invoiced_at < cut),
        dim=config.embedding_dim,
        seed=config.seed,
    )


@dataclass(frozen=True)
class HeldOut:
    """Users active on both sides of the validation cut, with their context and targets."""

    contexts: np.ndarray
    regions: np.ndarray
    targets: np.ndarray  # bool [U, V+1]


def held_out_users(events: CustomerEvents, cut: np.datetime64, context_length: int, item_count: int) -> HeldOut:
    """Context = last L events before the cut; targets = known items bought after it."""
    before = events.times < cut
    next_is_same_customer = np.r_[events.customer_start[1:] == events.customer_start[:-1], False]
    next_is_before = np.r_[before[1:], False]
    # Events are sorted by customer then time, so this is each user's last event before the cut.
    last_before = np.flatnonzero(before & next_is_same_customer & ~next_is_before)
    user_starts = events.customer_start[last_before]
    after = np.flatnonzero(~before)
    user_of_after = np.searchsorted(user_starts, events.customer_start[after])
    belongs = (user_of_after < len(user_starts)) & (
        user_starts[np.minimum(user_of_after, len(user_starts) - 1)] == events.customer_start[after]
    ) if len(user_starts) else np.zeros(len(after), dtype=bool)
    targets = np.zeros((len(last_before), item_count + 1), dtype=bool)
    targets[user_of_after[belongs], events.items[after[belongs]]] = True
    targets[:, 0] = False
    keep = targets.any(axis=1)
    contexts = contexts_before(events, last_before + 1, context_length)
    return HeldOut(contexts[keep], events.regions[last_before][keep], targets[keep])


def held_out_metrics(model: RankingModel, held_out: HeldOut, k: int = 10) -> dict[str, dict[str, float]]:
    """Model vs global and regional popularity on the held-out users, ranking the whole vocabulary."""
    stats = model.statistics
    rankings = {
        "model": model.score_all_items(held_out.contexts, held_out.regions),
        "popularity": np.broadcast_to(stats.global_log_popularity, held_out.targets.shape).copy(),
        "region_popularity": stats.region_log_popularity[held_out.regions],
    }
    results = {}
    for name, scores in rankings.items():
        scores[:, 0] = -np.inf  # the unknown item is never a recommendation
        results[name] = ranking_metrics(top_k(scores, k), held_out.targets, catalog_size=scores.shape[1] - 1)
    return results


def golden_cases(model: RankingModel, held_out: HeldOut, rng: np.random.Generator, count: int = 4) -> list[dict]:
    """Requests with expected outputs from the numpy reference; near-ties are skipped so order is stable."""
    item_count = len(model.statistics.vocabulary.items)
    cases: list[dict] = []
    for user in rng.permutation(len(held_out.regions)).tolist():
        if len(cases) == count:
            break
        context = held_out.contexts[user]
        if len(cases) == 1:
            context = np.r_[np.zeros(model.context_length // 2, dtype=np.int64), context[model.context_length // 2 :]]
        size = 5 if len(cases) == 2 else min(40, item_count)
        candidates = rng.choice(np.arange(1, item_count + 1), size=size, replace=False)
        candidates = np.r_[candidates, 0] if len(cases) == 3 else candidates  # pins the unknown item's score
        excluded = [] if len(cases) == 2 else sorted(rng.choice(len(candidates), 2, replace=False).tolist())
        penalty = np.zeros(len(candidates), dtype=np.float32)
        penalty[excluded] = -np.inf
        k = 10
        region = int(held_out.regions[user]) if len(cases) != 0 else 0
        scores, indices = rank_reference(model, context, region, candidates, penalty, k)
        finite = scores[np.isfinite(scores)]
        full = np.sort(model.score_candidates(context, region, candidates))[::-1]
        if len(finite) < len(scores) or (len(full) > 1 and np.min(np.abs(np.diff(full[: k + 3]))) < 1e-3):
            continue
        cases.append(golden_case(context, region, candidates, excluded, k, scores, indices))
    return cases


@dataclass(frozen=True)
class TrainedRanker:
    """The fitted model with what the manifest reports about it."""

    model: RankingModel
    held_out: HeldOut
    report: dict


def fit_ranking_model(
    transactions: Transactions, config: TrainingConfig, *, data_name: str = "", progress: bool = False
) -> TrainedRanker:
    """Clean, split by time, fit statistics and weights, measure on held-out users, refit statistics on all."""
    started = time.perf_counter()
    steps = tqdm(total=5, desc="training", unit=" step", disable=not progress)
    purchases = clean_purchases(transactions, require_customer=False)
    events = purchase_events(transactions)
    if len(events) == 0:
        raise DataError(f"{data_name or 'data'}: no clean purchases with a CustomerID")
    vocabulary = vocabulary_of(purchases)
    indexed = index_events(events, vocabulary)
    statistics_cut, validation_cut = (
        np.quantile(events.invoiced_at.astype(np.int64), [config.statistics_until, config.validation_from])
        .astype(np.int64)
        .astype("datetime64[s]")
    )
    rng = np.random.default_rng(config.seed)
    early_statistics = _statistics_before(vocabulary, purchases, events, statistics_cut, config)
    steps.set_postfix_str("samples")
    steps.update()

    group_times = indexed.times[indexed.invoice_start]
    has_context = indexed.invoice_start > indexed.customer_start[indexed.invoice_start]
    groups = np.flatnonzero((group_times >= statistics_cut) & (group_times < validation_cut) & has_context)
    contexts, regions, sample_of_pair, candidate_of_pair, labels = training_pairs(
        indexed, groups, config, np.exp(early_statistics.global_log_popularity), rng
    )
    if len(labels) == 0 or labels.min() == labels.max():
        raise DataError(f"{data_name or 'data'}: too little repeat-customer history to train on")
    untrained = RankingModel(early_statistics, config.context_length, config.repeat_decay, config.affinity_decay, np.zeros(len(FEATURE_NAMES)), 0.0)
    features = untrained.pair_features(contexts, regions, sample_of_pair, candidate_of_pair)
    steps.set_postfix_str(f"logistic regression on {len(labels)} pairs")
    steps.update()

    weights, bias = fit_logistic_regression(features, labels, config.l2)
    steps.set_postfix_str("held-out metrics")
    steps.update()

    validation_statistics = _statistics_before(vocabulary, purchases, events, validation_cut, config)
    validation_model = RankingModel(validation_statistics, config.context_length, config.repeat_decay, config.affinity_decay, weights, bias)
    held_out = held_out_users(indexed, validation_cut, config.context_length, len(vocabulary.items))
    metrics = held_out_metrics(validation_model, held_out)
    steps.set_postfix_str("final statistics")
    steps.update()

    final_statistics = fit_item_statistics(vocabulary, purchases, events, dim=config.embedding_dim, seed=config.seed)
    model = RankingModel(final_statistics, config.context_length, config.repeat_decay, config.affinity_decay, weights, bias)
    steps.update()
    steps.close()
    times = transactions.invoiced_at
    report = {
        "data": data_name,
        "date_range": [str(times.min()), str(times.max())],
        "rows": len(transactions),
        "purchase_rows": len(purchases),
        "customer_events": len(events),
        "split": {"statistics_until": str(statistics_cut), "validation_from": str(validation_cut)},
        "pairs": int(len(labels)),
        "feature_weights": dict(zip(FEATURE_NAMES, weights.tolist())),
        "bias": bias,
        "config": asdict(config),
        "held_out_users": int(len(held_out.regions)),
        "metrics": metrics,
        "seconds": round(time.perf_counter() - started, 2),
    }
    return TrainedRanker(model, held_out, report)


def train_bundle(
    data_path: str | Path,
    out_dir: str | Path,
    *,
    context_length: int = DEFAULT_CONTEXT_LENGTH,
    progress: bool = True,
    config: TrainingConfig | None = None,
) -> dict:
    """Read, fit, export to ONNX and write the bundle to out_dir; returns the manifest."""
    config = config or TrainingConfig(context_length=context_length)
    data_path = Path(data_path)
    transactions = read_transactions(data_path, progress=progress)
    trained = fit_ranking_model(transactions, config, data_name=data_path.name, progress=progress)
    model = trained.model
    onnx_model = build_ranking_graph(model)
    golden = golden_cases(model, trained.held_out, np.random.default_rng(config.seed))
    if not golden:
        raise DataError(f"{data_path.name}: no customer active after the validation cut, so no golden cases")
    return write_bundle(
        out_dir,
        onnx_model.SerializeToString(),
        {
            **signature(config.context_length),
            "context_length": config.context_length,
            "items": list(model.statistics.vocabulary.items),
            "regions": list(model.statistics.vocabulary.regions),
            "features": list(FEATURE_NAMES),
            "training": trained.report,
            "golden": golden,
        },
    )
