"""Offline evaluation of a bundle against simple baselines on a history/test split of purchases.

The model is scored through the shipped ONNX graph (Ranker.rank), exactly as the edge runs it.
"""

from __future__ import annotations

import csv
import gzip
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

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
from models.runtime import Ranker

K = 10
KNN_NEIGHBOURS = 50


@dataclass(frozen=True)
class EvaluationUsers:
    """Users active in both files, over the candidate items (all items seen in history)."""

    candidates: list[str]
    contexts: list[list[str]]  # last L history events per user, most recent last
    context_ages: list[list[float]]  # their ages in days when the test period starts (its first purchase)
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
    # Shoppers are asked at the start of the test period, so an event's age is measured from there.
    asked_at = test_events.invoiced_at.min() if len(test_events) else np.datetime64("NaT")
    event_ages = ((asked_at - history_events.invoiced_at) / np.timedelta64(1, "D")).tolist()
    for customer, code, region, age in zip(
        history_events.customer_id.tolist(), history_events.stock_code.tolist(), history_events.region.tolist(), event_ages
    ):
        row = user_row.get(customer)
        if row is not None:
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
        contexts=[context[-context_length:] for context in contexts],
        context_ages=[user_ages[-context_length:] for user_ages in ages],
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
        encoded = ranker.encode_context(context, ages_days=ages)
        _, positions = ranker.rank(encoded, ranker.region_index(region), candidates, penalty, K)
        top[row, : len(positions)] = positions
    return top


def _evaluate_section(
    ranker: Ranker, users: EvaluationUsers, targets: np.ndarray, exclude: np.ndarray | None, knn: np.ndarray
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
    users = evaluation_users(read_transactions(history_path), read_transactions(test_path), ranker.context_length)
    if not users.contexts:
        raise DataError("no customer buys in both the history and the test file")
    knn = item_knn_scores(users, ranker.context_length)
    history = users.history_counts > 0
    report = {"users": len(users.contexts), "k": K, "bundle": ranker.version, "candidates": len(users.candidates)}
    report.update(_evaluate_section(ranker, users, users.targets, None, knn))

    new_targets = users.targets & ~history
    has_new = new_targets.any(axis=1)
    new_users = EvaluationUsers(
        candidates=users.candidates,
        contexts=[context for context, keep in zip(users.contexts, has_new) if keep],
        context_ages=[ages for ages, keep in zip(users.context_ages, has_new) if keep],
        regions=[region for region, keep in zip(users.regions, has_new) if keep],
        history_counts=users.history_counts[has_new],
        targets=new_targets[has_new],
        popularity=users.popularity,
        region_popularity=users.region_popularity,
    )
    report["new_items"] = {"users": int(has_new.sum())}
    report["new_items"].update(_evaluate_section(ranker, new_users, new_users.targets, history[has_new], knn[has_new]))
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
