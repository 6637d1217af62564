"""Train the ranker on Online Retail data and write a bundle (model.onnx + manifest.json).

Samples mirror the evaluation protocol: at several time cuts, a shopper's profile of their whole history before the
cut (models/profile.py, as an edge holds it) is the input and everything they buy in the next horizon is the target.
Statistics for a cut come only from data before it. Weights are fitted with a multi-positive softmax over each
sample's candidates (models/samples.py, models/softmax.py). The last cut is the validation cut: it picks the repeat
offset and gives the held-out metrics. The shipped statistics are refit on all data.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from models.bundle import feature_spec_digest, version_of, write_bundle
from models.data import DataError, Transactions, clean_purchases, purchase_events, read_transactions
from models.export import build_ranking_graph, describe, signature
from models.features import FEATURE_NAMES, RankingModel
from models.golden import K, default_ages, golden_cases
from models.metrics import ranking_metrics, top_k
from models.profile import DECAY_DAYS, MAX_ITEMS, RECENT_EVENTS
from models.samples import CutSamples, HeldOut, ProfileTimeline, cut_samples
from models.softmax import fit_softmax_ranker
from models.statistics import fit_item_statistics, vocabulary_of

# The graph reads every item a profile may hold (P = MAX_ITEMS); the CLI's --context-length can narrow it.
DEFAULT_CONTEXT_LENGTH = MAX_ITEMS
_IS_REPEAT = FEATURE_NAMES.index("is_repeat")
_ITEM_KNN = FEATURE_NAMES.index("item_knn")


@dataclass(frozen=True)
class TrainingConfig:
    """Every knob of training in one place; recorded in the manifest."""

    slots: int = DEFAULT_CONTEXT_LENGTH  # P: profile items the graph reads, strongest kept
    neighbours: int = 10  # item-kNN table width K; 10-20 beat 50+ on new items
    trend_days: int = 28
    # Samples mirror the evaluation: profile at a cut, targets = everything bought in the next horizon.
    horizon_days: int = 61
    cut_spacing_days: int = 30
    training_cuts: int = 4
    min_history_days: int = 60  # no cut earlier than this after the first purchase
    explore_candidates: int = 100  # top item-kNN new items per sample, besides all repeats and the targets
    random_candidates: int = 100  # uniform new items per sample, importance-weighted in the softmax
    l2: float = 1e-2
    repeat_offsets: tuple[float, ...] = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)  # tried on the validation cut
    seed: int = 0


def _masked_top(scores: np.ndarray, known: np.ndarray, exclude: np.ndarray | None = None) -> np.ndarray:
    scores = np.where(known[None, :], scores, -np.inf)
    if exclude is not None:
        scores = np.where(exclude, -np.inf, scores)
    return top_k(scores, K)


def held_out_metrics(model: RankingModel, cut: CutSamples) -> dict[str, dict[str, dict[str, float]]]:
    """Model vs the evaluation's simple baselines on a cut's users, over all targets and over items new to them."""
    users, stats, known = cut.users, cut.statistics, cut.known
    popularity = np.exp(stats.global_log_popularity)
    tiebreak = popularity / (popularity.max() * 2.0)
    item_knn = (
        model.features(users.slots, users.regions)[_ITEM_KNN] if len(users.regions) else np.zeros((0, len(known)))
    )
    scores = {
        "model": model.score_all_items(users.slots, users.regions),
        "popularity": np.broadcast_to(stats.global_log_popularity, users.targets.shape),
        "region_popularity": stats.region_log_popularity[users.regions],
        "repeat": users.history + tiebreak,
        "item_knn": item_knn + 1e-6 * tiebreak,
    }
    history = users.history > 0
    new_targets = users.targets & ~history
    has_new = new_targets.any(axis=1)
    catalog = int(known.sum())
    report: dict[str, dict[str, dict[str, float]]] = {"all": {}, "new_items": {}}
    for name, values in scores.items():
        report["all"][name] = ranking_metrics(_masked_top(values, known), users.targets, history, catalog)
        report["new_items"][name] = ranking_metrics(
            _masked_top(values[has_new], known, history[has_new]), new_targets[has_new], history[has_new], catalog
        )
    return report


@dataclass(frozen=True)
class TrainedRanker:
    """The fitted model with what the manifest reports about it."""

    model: RankingModel
    held_out: HeldOut
    report: dict
    default_ages: np.ndarray  # float32: for requests that send recent items without ages


def _cut_times(
    first: np.datetime64, end: np.datetime64, config: TrainingConfig
) -> tuple[list[np.datetime64], np.datetime64]:
    """Training cuts (oldest first) and the validation cut, spaced back from the end of the data."""
    day = np.timedelta64(1, "D")
    earliest = first + config.min_history_days * day
    validation = max(end - config.horizon_days * day, earliest)
    training = [validation - (i + 1) * config.cut_spacing_days * day for i in range(config.training_cuts)]
    training = [cut for cut in training if cut >= earliest]
    if not training:  # short data: one training cut halfway to the validation cut
        training = [first + (validation - first) // 2]
    return sorted(training), validation


def fit_ranking_model(
    transactions: Transactions,
    config: TrainingConfig,
    *,
    data_name: str = "",
    progress: bool = False,
    shown: Transactions | None = None,
) -> TrainedRanker:
    """Clean, sample at time cuts, fit weights, pick the repeat offset and measure on the validation cut. `shown`:
    items shown to shoppers and not taken (models/events.py), plain negatives in their samples."""
    started = time.perf_counter()
    purchases = clean_purchases(transactions, require_customer=False)
    events = purchase_events(transactions)
    if len(events) == 0:
        raise DataError(f"{data_name or 'data'}: no clean purchases with a CustomerID")
    vocabulary = vocabulary_of(purchases)
    timeline = ProfileTimeline(events)
    end = purchases.invoiced_at.max() + np.timedelta64(1, "s")
    training_cuts, validation_cut = _cut_times(events.invoiced_at.min(), end, config)
    horizon = np.timedelta64(config.horizon_days, "D")
    rng = np.random.default_rng(config.seed)
    steps = tqdm(total=len(training_cuts) + 4, desc="training", unit=" step", disable=not progress)
    samples = []
    for cut in training_cuts:
        steps.set_postfix_str(f"samples at {str(cut)[:10]}")
        until = min(cut + horizon, validation_cut)
        samples.append(cut_samples(vocabulary, purchases, events, timeline, cut, until, config, rng, shown))
        steps.update()
    steps.set_postfix_str("validation samples")
    validation = cut_samples(vocabulary, purchases, events, timeline, validation_cut, end, config, rng, shown)
    steps.update()
    if sum(int(s.labels.sum()) for s in samples) == 0 or len(validation.users.regions) == 0:
        raise DataError(f"{data_name or 'data'}: too little repeat-customer history to train on")

    steps.set_postfix_str(f"softmax on {sum(len(s.labels) for s in samples)} candidates")
    weights, bias = fit_softmax_ranker(samples, config.l2)
    steps.update()
    # Where repeats stop and new items start is what the validation cut tunes: the one knob that moves.
    offsets = {}
    users = validation.users
    for offset in config.repeat_offsets:
        shifted = weights.copy()
        shifted[_IS_REPEAT] += offset
        candidate = RankingModel(validation.statistics, config.slots, shifted, bias)
        top = _masked_top(candidate.score_all_items(users.slots, users.regions), validation.known)
        offsets[offset] = ranking_metrics(top, users.targets)[f"ndcg@{K}"]
    repeat_offset = max(offsets, key=lambda value: (offsets[value], -value))
    weights[_IS_REPEAT] += repeat_offset
    metrics = held_out_metrics(RankingModel(validation.statistics, config.slots, weights, bias), validation)
    steps.set_postfix_str("final weights and statistics")
    # The shipped weights also learn from the validation cut, the most recent behaviour there is.
    final_weights, bias = fit_softmax_ranker(samples + [validation], config.l2)
    final_weights[_IS_REPEAT] += repeat_offset
    final_statistics = fit_item_statistics(
        vocabulary, purchases, events, neighbours=config.neighbours, trend_days=config.trend_days, until=end
    )
    model = RankingModel(final_statistics, config.slots, final_weights, bias)
    steps.update()
    steps.close()
    times = transactions.invoiced_at
    report = {
        "data": data_name,
        "date_range": [str(times.min()), str(times.max())],
        "rows": len(transactions),
        "purchase_rows": len(purchases),
        "customer_events": len(events),
        "split": {
            "training_cuts": [str(cut) for cut in training_cuts],
            "validation_from": str(validation_cut),
            "horizon_days": config.horizon_days,
        },
        "candidates": int(sum(len(s.labels) for s in samples)),
        "samples": int(sum(len(s.group_sizes) for s in samples)),
        "feature_weights": dict(zip(FEATURE_NAMES, final_weights.tolist())),
        "repeat_offset": {"chosen": repeat_offset, "validation_ndcg@10": {str(k): v for k, v in offsets.items()}},
        "bias": bias,
        "config": asdict(config),
        "held_out_users": int(len(validation.users.regions)),
        "metrics": metrics["all"],
        "metrics_new_items": metrics["new_items"],
        "seconds": round(time.perf_counter() - started, 2),
    }
    return TrainedRanker(model, validation.users, report, default_ages(events, validation_cut))


def train_bundle(
    data_path: str | Path,
    out_dir: str | Path,
    *,
    context_length: int = DEFAULT_CONTEXT_LENGTH,
    progress: bool = True,
    config: TrainingConfig | None = None,
) -> dict:
    """Read, fit, export to ONNX and write the bundle to out_dir; returns the manifest."""
    config = config or TrainingConfig(slots=context_length)
    data_path = Path(data_path)
    transactions = read_transactions(data_path, progress=progress)
    trained = fit_ranking_model(transactions, config, data_name=data_path.name, progress=progress)
    return write_trained_bundle(trained, out_dir, config)


def write_trained_bundle(trained: TrainedRanker, out_dir: str | Path, config: TrainingConfig) -> dict:
    """Export a fitted ranker to ONNX with golden cases and write the bundle; returns the manifest."""
    model = trained.model
    onnx_model = build_ranking_graph(model)
    golden = golden_cases(model, trained.held_out, np.random.default_rng(config.seed))
    if not golden:
        raise DataError("no customer active after the validation cut, so no golden cases")
    fields = {
        **signature(),
        "context_length": config.slots,
        "profile": {"max_items": MAX_ITEMS, "decay_days": DECAY_DAYS, "recent_events": RECENT_EVENTS},
        "default_ages_days": [float(v) for v in trained.default_ages],
        "items": list(model.statistics.vocabulary.items),
        "regions": list(model.statistics.vocabulary.regions),
        "features": list(FEATURE_NAMES),
        "nodes": len(onnx_model.graph.node),
        "training": trained.report,
        "golden": golden,
    }
    fields["feature_spec_sha256"] = feature_spec_digest(fields)
    # The version hashes the graph; the file then describes itself (version included), and its sha256 covers both.
    version = version_of(onnx_model.SerializeToString())
    first, last = (str(t).replace(" ", "T") for t in trained.report["date_range"])
    describe(onnx_model, version, f"{first}/{last}", fields["feature_spec_sha256"])
    return write_bundle(out_dir, onnx_model.SerializeToString(), fields, version=version)
