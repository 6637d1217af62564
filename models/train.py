"""Train the ranker on Online Retail data and write a bundle (model.onnx + manifest.json).

Samples mirror the evaluation protocol: at several time cuts, a customer's last L events before the
cut are the context and everything they buy in the next horizon is the target. Statistics for a cut
come only from data before it. Weights are fitted with a multi-positive softmax over each sample's
candidates (all repeats, the targets, top item-kNN new items, importance-weighted random items),
so the loss ranks repeats against new items the way NDCG@k does. The last cut is the validation
cut: it picks the repeat offset and gives the held-out metrics. The shipped statistics are refit on all data.
Each context event carries its age in days at the cut, as a request carries it at the edge.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from models.bundle import golden_case, write_bundle
from models.data import (
    DataError,
    Transactions,
    clean_purchases,
    purchase_events,
    read_transactions,
)
from models.export import build_ranking_graph, signature
from models.features import (
    FEATURE_NAMES,
    RankingModel,
    context_features,
    rank_reference,
)
from models.metrics import ranking_metrics, top_k
from models.statistics import (
    ItemStatistics,
    Vocabulary,
    fit_item_statistics,
    vocabulary_of,
)

# benchmarks/model.py sweeps 100/200/400 on history→Aug / test Sep–Oct: 100 loses ~1% ndcg@10 over all
# targets, 200 and 400 tie (0.3625 vs 0.3619 all, 0.1106 vs 0.1108 new items), so the shorter request wins.
DEFAULT_CONTEXT_LENGTH = 200
K = 10
_IS_REPEAT = FEATURE_NAMES.index("is_repeat")
_ITEM_KNN = FEATURE_NAMES.index("item_knn")


@dataclass(frozen=True)
class TrainingConfig:
    """Every knob of training in one place; recorded in the manifest."""

    context_length: int = DEFAULT_CONTEXT_LENGTH
    recent_decay: float = 0.99  # per purchase event, for the recency-weighted count
    # e-folding time in days of the decayed count and of the shopper's recency; on the validation cut of
    # history→Aug, 180 beat 30/60/90 and ties 365/1000 (short decays favour summer habits that autumn breaks).
    age_decay_days: float = 180.0
    neighbours: int = 10  # item-kNN table width K; 10-20 beat 50+ on new items
    trend_days: int = 28
    # Samples mirror the evaluation: context before a cut, targets = everything bought in the next horizon.
    horizon_days: int = 61
    cut_spacing_days: int = 30
    training_cuts: int = 4
    min_history_days: int = 60  # no cut earlier than this after the first purchase
    explore_candidates: int = 100  # top item-kNN new items per sample, besides all repeats and the targets
    random_candidates: int = 100  # uniform new items per sample, importance-weighted in the softmax
    l2: float = 1e-2
    repeat_offsets: tuple[float, ...] = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)  # tried on the validation cut
    seed: int = 0


@dataclass(frozen=True)
class CustomerEvents:
    """Purchase events as vocabulary indices, grouped by customer (sorted by customer, then time)."""

    items: np.ndarray  # int64 [E]
    regions: np.ndarray  # int64 [E]
    times: np.ndarray  # datetime64[s] [E]
    customer_start: np.ndarray  # int64 [E]: first event position of the same customer


def index_events(events: Transactions, vocabulary: Vocabulary) -> CustomerEvents:
    positions = np.arange(len(events))
    new_customer = np.r_[True, events.customer_id[1:] != events.customer_id[:-1]]
    return CustomerEvents(
        items=vocabulary.encode_items(events.stock_code),
        regions=vocabulary.encode_regions(events.region),
        times=events.invoiced_at,
        customer_start=np.maximum.accumulate(np.where(new_customer, positions, 0)),
    )


DAY = np.timedelta64(1, "D")


def contexts_before(
    events: CustomerEvents, positions: np.ndarray, context_length: int, at: np.datetime64
) -> tuple[np.ndarray, np.ndarray]:
    """[S, L] the customer's last L events before each position, left-padded with 0, and their ages in days at `at`."""
    window = positions[:, None] - context_length + np.arange(context_length)
    inside = window >= events.customer_start[positions][:, None]
    clipped = np.clip(window, 0, None)
    ages = (at - events.times[clipped]) / DAY
    return np.where(inside, events.items[clipped], 0), np.where(inside, ages, 0.0)


@dataclass(frozen=True)
class HeldOut:
    """Users active on both sides of a cut: context, whole-history counts and targets."""

    contexts: np.ndarray  # int64 [U, L]
    ages: np.ndarray  # float64 [U, L]: days from each context event to the cut
    regions: np.ndarray  # int64 [U]
    history: np.ndarray  # float64 [U, V+1]: all purchase events before the cut
    targets: np.ndarray  # bool [U, V+1]: bought in [cut, until), known items only


def held_out_users(
    events: CustomerEvents, cut: np.datetime64, until: np.datetime64, context_length: int, known: np.ndarray
) -> HeldOut:
    """Context = last L events before the cut; targets = known items bought in [cut, until)."""
    before = events.times < cut
    next_is_same_customer = np.r_[events.customer_start[1:] == events.customer_start[:-1], False]
    next_is_before = np.r_[before[1:], False]
    # Events are sorted by customer then time, so this is each user's last event before the cut.
    last_before = np.flatnonzero(before & next_is_same_customer & ~next_is_before | before & ~next_is_same_customer)
    user_starts = events.customer_start[last_before]
    size = len(known)

    def user_rows(selected: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rows = np.searchsorted(user_starts, events.customer_start[selected])
        clipped = np.minimum(rows, max(len(user_starts) - 1, 0))
        belongs = (rows < len(user_starts)) & (user_starts[clipped] == events.customer_start[selected]) if len(user_starts) else np.zeros(len(selected), bool)
        return rows[belongs], selected[belongs]

    rows, after = user_rows(np.flatnonzero(~before & (events.times < until)))
    targets = np.zeros((len(last_before), size), dtype=bool)
    targets[rows, events.items[after]] = True
    targets &= known[None, :]
    keep = targets.any(axis=1)
    rows, earlier = user_rows(np.flatnonzero(before))
    history = np.bincount(rows * size + events.items[earlier], minlength=len(last_before) * size)
    history = history.reshape(len(last_before), size).astype(np.float64)
    history[:, 0] = 0.0
    # A user with a target has an event after last_before, so last_before + 1 is a valid position.
    contexts, ages = contexts_before(events, last_before[keep] + 1, context_length, cut)
    return HeldOut(contexts, ages, events.regions[last_before][keep], history[keep], targets[keep])


@dataclass(frozen=True)
class CutSamples:
    """One cut's statistics, users, and softmax groups (rows of features, labels, log importance weights)."""

    statistics: ItemStatistics
    users: HeldOut
    known: np.ndarray  # bool [V+1]: items sold before the cut
    features: np.ndarray  # float64 [P, F]
    labels: np.ndarray  # float64 [P]
    log_weights: np.ndarray  # float64 [P]
    group_sizes: np.ndarray  # int64 [G]


def cut_samples(
    vocabulary: Vocabulary,
    purchases: Transactions,
    events: Transactions,
    indexed: CustomerEvents,
    cut: np.datetime64,
    until: np.datetime64,
    config: TrainingConfig,
    rng: np.random.Generator,
) -> CutSamples:
    """Statistics from before the cut, users across it, and their candidate groups."""
    statistics = fit_item_statistics(
        vocabulary,
        purchases.select(purchases.invoiced_at < cut),
        events.select(events.invoiced_at < cut),
        neighbours=config.neighbours,
        trend_days=config.trend_days,
        until=cut,
    )
    known = np.isfinite(statistics.global_log_popularity) & (
        np.bincount(vocabulary.encode_items(purchases.stock_code[purchases.invoiced_at < cut]), minlength=len(vocabulary.items) + 1) > 0
    )
    known[0] = False
    users = held_out_users(indexed, cut, until, config.context_length, known)
    rows, labels, log_weights, sizes = [], [], [], []
    for start in range(0, len(users.regions), 128):
        window = slice(start, start + 128)
        features = context_features(
            statistics, users.contexts[window], users.regions[window], config.recent_decay,
            users.ages[window], config.age_decay_days,
        )
        for user in range(features.shape[1]):
            targets = users.targets[start + user]
            repeats = features[_IS_REPEAT, user] > 0
            explore = np.where(repeats | ~known, -np.inf, features[_ITEM_KNN, user])
            wanted = min(config.explore_candidates, len(explore) - 1)
            top = np.argpartition(-explore, wanted)[:wanted]
            top = top[np.isfinite(explore[top])]
            fixed = np.zeros(len(known), dtype=bool)
            fixed[top] = True
            fixed |= repeats | targets
            rest = np.flatnonzero(known & ~fixed)
            drawn = rng.choice(rest, min(config.random_candidates, len(rest)), replace=False)
            candidates = np.r_[np.flatnonzero(fixed), drawn]
            rows.append(features[:, user, candidates].T)
            labels.append(targets[candidates])
            # Sampled softmax: each drawn item stands for len(rest)/len(drawn) items like it.
            log_weights.append(np.r_[np.zeros(fixed.sum()), np.full(len(drawn), np.log(len(rest) / max(len(drawn), 1)))])
            sizes.append(len(candidates))
    empty = np.zeros((0, len(FEATURE_NAMES)))
    return CutSamples(
        statistics,
        users,
        known,
        np.concatenate(rows) if rows else empty,
        np.concatenate(labels).astype(np.float64) if labels else np.zeros(0),
        np.concatenate(log_weights) if log_weights else np.zeros(0),
        np.array(sizes, dtype=np.int64),
    )


def fit_softmax_ranker(samples: list[CutSamples], l2: float) -> tuple[np.ndarray, float]:
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


def _masked_top(scores: np.ndarray, known: np.ndarray, exclude: np.ndarray | None = None) -> np.ndarray:
    scores = np.where(known[None, :], scores, -np.inf)
    if exclude is not None:
        scores = np.where(exclude, -np.inf, scores)
    return top_k(scores, K)


def held_out_metrics(model: RankingModel, cut: CutSamples) -> dict[str, dict[str, dict[str, float]]]:
    """Model vs the evaluation's baselines on a cut's users, over all targets and over items new to them."""
    users, stats, known = cut.users, cut.statistics, cut.known
    popularity = np.exp(stats.global_log_popularity)
    tiebreak = popularity / (popularity.max() * 2.0)
    features = np.concatenate(
        [model.features(users.contexts[s : s + 256], users.ages[s : s + 256], users.regions[s : s + 256])[_ITEM_KNN] for s in range(0, len(users.regions), 256)]
    ) if len(users.regions) else np.zeros((0, len(known)))
    scores = {
        "model": model.score_all_items(users.contexts, users.ages, users.regions),
        "popularity": np.broadcast_to(stats.global_log_popularity, users.targets.shape),
        "region_popularity": stats.region_log_popularity[users.regions],
        "repeat": users.history + tiebreak,
        "item_knn": features + 1e-6 * tiebreak,
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


def golden_cases(model: RankingModel, held_out: HeldOut, rng: np.random.Generator, count: int = 4) -> list[dict]:
    """Requests with expected outputs from the numpy reference; near-ties are skipped so order is stable."""
    item_count = len(model.statistics.vocabulary.items)
    cases: list[dict] = []
    for user in rng.permutation(len(held_out.regions)).tolist():
        if len(cases) == count:
            break
        # Ages go through the graph as float32: the reference sees the same rounded values.
        context, ages = held_out.contexts[user], held_out.ages[user].astype(np.float32).astype(np.float64)
        if len(cases) == 1:
            context = np.r_[np.zeros(model.context_length // 2, dtype=np.int64), context[model.context_length // 2 :]]
        size = 5 if len(cases) == 2 else min(40, item_count)
        candidates = rng.choice(np.arange(1, item_count + 1), size=size, replace=False)
        if len(cases) == 0:  # pins the repeat terms: some candidates come from the context
            in_context = np.unique(context[context > 0])[:5]
            candidates = np.unique(np.r_[candidates[: size - len(in_context)], in_context])
        candidates = np.r_[candidates, 0] if len(cases) == 3 else candidates  # pins the unknown item's score
        excluded = [] if len(cases) == 2 else sorted(rng.choice(len(candidates), 2, replace=False).tolist())
        penalty = np.zeros(len(candidates), dtype=np.float32)
        penalty[excluded] = -np.inf
        region = int(held_out.regions[user]) if len(cases) != 0 else 0
        scores, indices = rank_reference(model, context, ages, region, candidates, penalty, K)
        finite = scores[np.isfinite(scores)]
        full = np.sort(model.score_candidates(context, ages, region, candidates))[::-1]
        if len(finite) < len(scores) or (len(full) > 1 and np.min(np.abs(np.diff(full[: K + 3]))) < 1e-3):
            continue
        cases.append(golden_case(context, ages, region, candidates, excluded, K, scores, indices))
    return cases


def default_ages(held_out: HeldOut) -> np.ndarray:
    """float32 [L]: median age in days of the event at each context position, for requests that send no ages.

    Positions no held-out user reaches take the oldest median seen, so the defaults never decrease with age.
    """
    length = held_out.contexts.shape[1]
    medians = np.zeros(length)
    for position in range(length):
        present = held_out.contexts[:, position] > 0
        medians[position] = np.median(held_out.ages[present, position]) if present.any() else np.nan
    medians = np.where(np.isnan(medians), np.nanmax(medians) if np.isfinite(medians).any() else 0.0, medians)
    # Older positions sit on the left: the running maximum from the right keeps ages non-increasing left to right.
    return np.maximum.accumulate(medians[::-1])[::-1].astype(np.float32)


@dataclass(frozen=True)
class TrainedRanker:
    """The fitted model with what the manifest reports about it."""

    model: RankingModel
    held_out: HeldOut
    report: dict


def _model(statistics: ItemStatistics, config: TrainingConfig, weights: np.ndarray, bias: float) -> RankingModel:
    return RankingModel(
        statistics, config.context_length, config.recent_decay, config.age_decay_days, weights, bias
    )


def _cut_times(first: np.datetime64, end: np.datetime64, config: TrainingConfig) -> tuple[list[np.datetime64], np.datetime64]:
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
    transactions: Transactions, config: TrainingConfig, *, data_name: str = "", progress: bool = False
) -> TrainedRanker:
    """Clean, sample at time cuts, fit weights, pick the repeat offset and measure on the validation cut."""
    started = time.perf_counter()
    purchases = clean_purchases(transactions, require_customer=False)
    events = purchase_events(transactions)
    if len(events) == 0:
        raise DataError(f"{data_name or 'data'}: no clean purchases with a CustomerID")
    vocabulary = vocabulary_of(purchases)
    indexed = index_events(events, vocabulary)
    end = purchases.invoiced_at.max() + np.timedelta64(1, "s")
    training_cuts, validation_cut = _cut_times(events.invoiced_at.min(), end, config)
    horizon = np.timedelta64(config.horizon_days, "D")
    rng = np.random.default_rng(config.seed)
    steps = tqdm(total=len(training_cuts) + 4, desc="training", unit=" step", disable=not progress)
    samples = []
    for cut in training_cuts:
        steps.set_postfix_str(f"samples at {str(cut)[:10]}")
        samples.append(cut_samples(vocabulary, purchases, events, indexed, cut, min(cut + horizon, validation_cut), config, rng))
        steps.update()
    steps.set_postfix_str("validation samples")
    validation = cut_samples(vocabulary, purchases, events, indexed, validation_cut, end, config, rng)
    steps.update()
    if sum(int(s.labels.sum()) for s in samples) == 0 or len(validation.users.regions) == 0:
        raise DataError(f"{data_name or 'data'}: too little repeat-customer history to train on")

    steps.set_postfix_str(f"softmax on {sum(len(s.labels) for s in samples)} candidates")
    weights, bias = fit_softmax_ranker(samples, config.l2)
    steps.update()
    # Where repeats stop and new items start is what the validation cut tunes: the one knob that moves.
    offsets = {}
    for offset in config.repeat_offsets:
        shifted = weights.copy()
        shifted[_IS_REPEAT] += offset
        candidate = _model(validation.statistics, config, shifted, bias)
        top = _masked_top(candidate.score_all_items(validation.users.contexts, validation.users.ages, validation.users.regions), validation.known)
        offsets[offset] = ranking_metrics(top, validation.users.targets)[f"ndcg@{K}"]
    repeat_offset = max(offsets, key=lambda value: (offsets[value], -value))
    weights[_IS_REPEAT] += repeat_offset
    validation_model = _model(validation.statistics, config, weights, bias)
    metrics = held_out_metrics(validation_model, validation)
    steps.set_postfix_str("final weights and statistics")
    # The shipped weights also learn from the validation cut, the most recent behaviour there is.
    final_weights, bias = fit_softmax_ranker(samples + [validation], config.l2)
    final_weights[_IS_REPEAT] += repeat_offset
    final_statistics = fit_item_statistics(
        vocabulary, purchases, events, neighbours=config.neighbours, trend_days=config.trend_days, until=end
    )
    model = _model(final_statistics, config, final_weights, bias)
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
    return TrainedRanker(model, validation.users, report)


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
    return write_trained_bundle(trained, out_dir, config)


def write_trained_bundle(trained: TrainedRanker, out_dir: str | Path, config: TrainingConfig) -> dict:
    """Export a fitted ranker to ONNX with golden cases and write the bundle; returns the manifest."""
    model = trained.model
    onnx_model = build_ranking_graph(model)
    golden = golden_cases(model, trained.held_out, np.random.default_rng(config.seed))
    if not golden:
        raise DataError("no customer active after the validation cut, so no golden cases")
    return write_bundle(
        out_dir,
        onnx_model.SerializeToString(),
        {
            **signature(),
            "context_length": config.context_length,
            "default_ages_days": [float(v) for v in default_ages(trained.held_out)],
            "items": list(model.statistics.vocabulary.items),
            "regions": list(model.statistics.vocabulary.regions),
            "features": list(FEATURE_NAMES),
            "nodes": len(onnx_model.graph.node),
            "training": trained.report,
            "golden": golden,
        },
    )
