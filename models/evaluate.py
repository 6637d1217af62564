"""Offline evaluation of a bundle against baselines on a history/test split of purchases.

The model is scored through the shipped ONNX graph, exactly as the edge runs it: each shopper's profile is built
from --history with models/profile.py, the way an edge's store builds it from the same events, and ranked as of the
start of the test period (Ranker.rank_profiles). Bundles made before profiles read the last L events instead.
"""

from __future__ import annotations

import csv
import gzip
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.baselines import NextBasketBaselines, tune
from models.data import (
    COLUMNS,
    NO_REGION,
    DataError,
    Transactions,
    clean_purchases,
    purchase_events,
    read_transactions,
)
from models.metrics import ranking_metrics, top_k
from models.profile import Profile, build
from models.runtime import Ranker

K = 10
KNN_NEIGHBOURS = 50
KNN_CONTEXT = 200  # the item-kNN baseline reads the last 200 events, whatever the bundle reads


@dataclass(frozen=True)
class EvaluationUsers:
    """Users active in both files, over the candidate items (all items seen in history)."""

    candidates: list[str]
    customers: list[int]
    contexts: list[list[str]]  # last L history events per user, most recent last
    context_ages: list[list[float]]  # their ages in days when the test period starts (its first purchase)
    profiles: list[Profile]  # each user's profile of the whole history, as an edge would hold it
    asked_at: float  # Unix seconds: the start of the test period
    regions: list[str]
    history_counts: np.ndarray  # float [U, M]: own purchase events per candidate
    targets: np.ndarray  # bool [U, M]
    popularity: np.ndarray  # float [M]: history purchase lines
    region_popularity: dict[str, np.ndarray]  # region → float [M]


def evaluation_users(history: Transactions, test: Transactions, context_length: int) -> EvaluationUsers:
    purchases = clean_purchases(history, require_customer=False)
    candidates = sorted(set(purchases.stock_code.tolist()))
    position = {code: index for index, code in enumerate(candidates)}
    item_positions = np.array([position[code] for code in purchases.stock_code.tolist()], dtype=np.int64)
    popularity = np.bincount(item_positions, minlength=len(candidates)).astype(np.float64)
    region_popularity = {
        region: np.bincount(item_positions[purchases.region == region], minlength=len(candidates)).astype(np.float64)
        for region in set(purchases.region.tolist()) - {NO_REGION}
    }

    history_events, test_events = purchase_events(history), purchase_events(test)
    users = sorted(set(history_events.customer_id.tolist()) & set(test_events.customer_id.tolist()))
    user_row = {customer: row for row, customer in enumerate(users)}
    history_counts = np.zeros((len(users), len(candidates)))
    targets = np.zeros((len(users), len(candidates)), dtype=bool)
    contexts: list[list[str]] = [[] for _ in users]
    ages: list[list[float]] = [[] for _ in users]
    regions = [NO_REGION] * len(users)
    times: list[list[float]] = [[] for _ in users]
    seconds = history_events.invoiced_at.astype("datetime64[s]").astype(np.int64).astype(np.float64).tolist()
    # Shoppers are asked at the start of the test period, so an event's age is measured from there.
    asked_at = test_events.invoiced_at.min() if len(test_events) else np.datetime64("NaT")
    event_ages = ((asked_at - history_events.invoiced_at) / np.timedelta64(1, "D")).tolist()
    for customer, code, region, age, second in zip(
        history_events.customer_id.tolist(),
        history_events.stock_code.tolist(),
        history_events.region.tolist(),
        event_ages,
        seconds,
    ):
        row = user_row.get(customer)
        if row is not None:
            times[row].append(second)
            history_counts[row, position[code]] += 1
            contexts[row].append(code)
            ages[row].append(age)
            regions[row] = region  # events are in time order: the last one wins
    for customer, code in zip(test_events.customer_id.tolist(), test_events.stock_code.tolist()):
        row = user_row.get(customer)
        if row is not None and code in position:
            targets[row, position[code]] = True
    return EvaluationUsers(
        candidates=candidates,
        customers=users,
        contexts=[context[-context_length:] for context in contexts],
        context_ages=[user_ages[-context_length:] for user_ages in ages],
        profiles=[build(zip(context, when)) for context, when in zip(contexts, times)],
        asked_at=float(asked_at.astype("datetime64[s]").astype(np.int64)) if len(test_events) else 0.0,
        regions=regions,
        history_counts=history_counts,
        targets=targets,
        popularity=popularity,
        region_popularity=region_popularity,
    )


def item_knn_scores(users: EvaluationUsers, context_length: int) -> np.ndarray:
    """Sum over context items of their top-KNN_NEIGHBOURS cosine neighbours (customer co-purchase)."""
    bought = (users.history_counts > 0).astype(np.float32)
    counts = bought.sum(axis=0)
    similarity = bought.T @ bought
    norms = np.sqrt(np.outer(counts, counts))
    similarity = np.divide(similarity, norms, out=np.zeros_like(similarity), where=norms > 0)
    np.fill_diagonal(similarity, 0.0)
    if similarity.shape[0] > KNN_NEIGHBOURS:
        cutoff = np.partition(similarity, -KNN_NEIGHBOURS, axis=1)[:, -KNN_NEIGHBOURS][:, None]
        similarity = np.where(similarity >= cutoff, similarity, 0.0)
    position = {code: index for index, code in enumerate(users.candidates)}
    context_counts = np.zeros_like(users.history_counts, dtype=np.float32)
    for row, context in enumerate(users.contexts):
        for code in context[-context_length:]:
            context_counts[row, position[code]] += 1
    return context_counts @ similarity


def model_top(ranker: Ranker, users: EvaluationUsers, exclude: np.ndarray | None) -> np.ndarray:
    candidates = ranker.item_indices(users.candidates)
    top = np.zeros((len(users.contexts), K), dtype=np.int64)
    for row, (context, ages, region) in enumerate(zip(users.contexts, users.context_ages, users.regions)):
        penalty = np.zeros(len(candidates), dtype=np.float32)
        if exclude is not None:
            penalty[exclude[row]] = -np.inf
        if ranker.reads_profiles:
            encoded = ranker.encode_profile(users.profiles[row], users.asked_at)
        else:
            encoded = ranker.encode_context(context, ages_days=ages)
        _, positions = ranker.rank(encoded, ranker.region_index(region), candidates, penalty, K)
        top[row, : len(positions)] = positions
    return top


def _evaluate_section(
    ranker: Ranker,
    users: EvaluationUsers,
    targets: np.ndarray,
    exclude: np.ndarray | None,
    knn: np.ndarray,
    next_basket: dict[str, np.ndarray],
) -> dict:
    history = users.history_counts > 0
    tiebreak = users.popularity / (users.popularity.max() + 1.0)  # < 1, so it only breaks ties
    baseline_scores = {
        "popularity": np.broadcast_to(users.popularity, targets.shape).copy(),
        "region_popularity": np.stack(
            [users.region_popularity.get(region, users.popularity) + tiebreak for region in users.regions]
        ),
        "repeat": users.history_counts + tiebreak,
        "item_knn": knn + 1e-6 * tiebreak,
        **{name: scores + 1e-9 * tiebreak for name, scores in next_basket.items()},
    }
    catalog = len(users.candidates)
    report = {"model": ranking_metrics(model_top(ranker, users, exclude), targets, history, catalog)}
    report["baselines"] = {}
    for name, scores in baseline_scores.items():
        if exclude is not None:
            scores[exclude] = -np.inf
        report["baselines"][name] = ranking_metrics(top_k(scores, K), targets, history, catalog)
    return report


def evaluate(bundle_dir: str | Path, history_path: str | Path, test_path: str | Path) -> dict:
    """Metrics@10 for the bundle and the baselines, on all targets and on items new to each user."""
    ranker = Ranker.load(bundle_dir)
    history_transactions = read_transactions(history_path)
    users = evaluation_users(history_transactions, read_transactions(test_path), ranker.context_length)
    if not users.contexts:
        raise DataError("no customer buys in both the history and the test file")
    knn = item_knn_scores(users, KNN_CONTEXT)
    history = users.history_counts > 0
    history_events = purchase_events(history_transactions)
    tiebreak = 1e-9 * users.popularity / (users.popularity.max() + 1.0)
    tuning = tune(history_events, users.candidates, tiebreak)
    baselines = NextBasketBaselines(history_events, users.candidates)
    next_basket = {name: baselines.scores(name, tuned["params"], users.customers) for name, tuned in tuning.items()}
    report = {
        "users": len(users.contexts),
        "k": K,
        "bundle": ranker.version,
        "candidates": len(users.candidates),
        "baseline_tuning": tuning,
    }
    report.update(_evaluate_section(ranker, users, users.targets, None, knn, next_basket))

    new_targets = users.targets & ~history
    has_new = new_targets.any(axis=1)
    new_users = EvaluationUsers(
        candidates=users.candidates,
        customers=[customer for customer, keep in zip(users.customers, has_new) if keep],
        contexts=[context for context, keep in zip(users.contexts, has_new) if keep],
        context_ages=[ages for ages, keep in zip(users.context_ages, has_new) if keep],
        profiles=[profile for profile, keep in zip(users.profiles, has_new) if keep],
        asked_at=users.asked_at,
        regions=[region for region, keep in zip(users.regions, has_new) if keep],
        history_counts=users.history_counts[has_new],
        targets=new_targets[has_new],
        popularity=users.popularity,
        region_popularity=users.region_popularity,
    )
    report["new_items"] = {"users": int(has_new.sum())}
    report["new_items"].update(
        _evaluate_section(
            ranker,
            new_users,
            new_users.targets,
            history[has_new],
            knn[has_new],
            {name: scores[has_new] for name, scores in next_basket.items()},
        )
    )
    return report


def split_by_date(path: str | Path, cut: str, history_path: str | Path, test_path: str | Path) -> tuple[int, int]:
    """Copy rows with InvoiceDate < cut (ISO text) to history, the rest to test; returns both row counts."""
    transactions_header = list(COLUMNS)
    source = Path(path)
    if not source.is_file():
        raise DataError(f"no such file: {source}")
    opener = gzip.open if source.read_bytes()[:2] == b"\x1f\x8b" else open
    with opener(source, "rt", encoding="utf-8", newline="") as text:
        reader = csv.reader(text)
        header = next(reader)
        if [name.strip() for name in header][: len(transactions_header)] != transactions_header:
            raise DataError(f"{source.name}: header is not {','.join(transactions_header)}")
        date_column = header.index("InvoiceDate")
        parts: dict[bool, list[list[str]]] = {True: [], False: []}
        for row in reader:
            if row:
                parts[row[date_column] < cut].append(row)
    for target, rows in ((Path(history_path), parts[True]), (Path(test_path), parts[False])):
        buffer = io.StringIO(newline="")
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
        data = buffer.getvalue().encode("utf-8")
        target.write_bytes(gzip.compress(data, mtime=0) if target.suffix == ".gz" else data)
    return len(parts[True]), len(parts[False])
