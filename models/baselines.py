"""Published next-basket baselines for `model evaluate`: TIFU-KNN (Hu et al., SIGIR 2020) and UP-CF@r (Faggioli et
al., UMAP 2020), each tuned on a validation split drawn from the history only (its last VALIDATION_DAYS as targets).

Baskets are invoices; every customer of the history is a possible neighbour. TIFU-KNN: a shopper's vector is the
time-decayed mean of their basket vectors in groups of m (r_b inside a group, r_g across groups), blended as
alpha * own + (1 - alpha) * mean of the k nearest (cosine) shoppers' vectors. UP-CF@r: a shopper's recency-aware
user-wise popularity P_u[i] = share of their last r baskets holding i; score = sum over shoppers v of
sim(u, v)^q * P_v[i], sim the asymmetric cosine |I_u ∩ I_v| / (|I_u|^alpha |I_v|^(1 - alpha)), u itself included.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
from scipy import sparse

from models.data import Transactions
from models.metrics import ranking_metrics, top_k

K = 10
VALIDATION_DAYS = 61  # as long as the test periods and the training horizon
TIFU_GRID = {"m": (3, 7), "r": (0.9, 1.0), "k": (100, 300), "alpha": (0.7, 0.9)}
UPCF_GRID = {"r": (1, 5, 10, 0), "alpha": (0.25, 0.5, 0.75), "q": (1, 5, 10)}  # r = 0: all baskets
UPCF_NEIGHBOURS = 200  # the most similar shoppers kept per shopper (the sum over the rest is negligible)


@dataclass(frozen=True)
class Baskets:
    """Every customer's baskets, oldest first, as item positions into a candidate list."""

    customers: list[int]
    baskets: list[list[np.ndarray]]  # per customer: int64 item positions of each basket


def baskets_of(events: Transactions, position: dict[str, int]) -> Baskets:
    """Invoices per customer in time order (events sorted by customer then time), items outside `position` dropped."""
    by_customer: dict[int, dict[str, list[int]]] = {}
    for customer, invoice, code in zip(
        events.customer_id.tolist(), events.invoice_no.tolist(), events.stock_code.tolist()
    ):
        index = position.get(code)
        if index is not None:
            by_customer.setdefault(customer, {}).setdefault(invoice, []).append(index)
    customers = sorted(by_customer)
    return Baskets(customers, [[np.array(items, np.int64) for items in by_customer[c].values()] for c in customers])


def _rows(vectors: list[dict[int, float]], size: int) -> sparse.csr_matrix:
    data, indices, pointers = [], [], [0]
    for vector in vectors:
        indices.extend(vector)
        data.extend(vector.values())
        pointers.append(len(indices))
    return sparse.csr_matrix(
        (np.array(data, np.float64), np.array(indices, np.int64), np.array(pointers)), shape=(len(vectors), size)
    )


def tifu_vectors(baskets: Baskets, size: int, m: int, r: float) -> sparse.csr_matrix:
    """[C, M] TIFU user vectors: groups of m baskets counted back from the newest, decay r inside and across groups."""
    vectors = []
    for own in baskets.baskets:
        groups = [own[max(0, end - m) : end] for end in range(len(own), 0, -m)][::-1]  # oldest group first
        vector: dict[int, float] = {}
        for g, group in enumerate(groups):
            group_weight = r ** (len(groups) - 1 - g) / len(groups)
            for b, basket in enumerate(group):
                weight = group_weight * r ** (len(group) - 1 - b) / len(group)
                for item in basket.tolist():
                    vector[item] = vector.get(item, 0.0) + weight
        vectors.append(vector)
    return _rows(vectors, size)


def _top_neighbours(similarity: np.ndarray, k: int) -> sparse.csr_matrix:
    k = max(1, min(k, similarity.shape[1]))
    top = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
    values = np.take_along_axis(similarity, top, axis=1)
    rows = np.repeat(np.arange(similarity.shape[0]), k)
    return sparse.csr_matrix((values.ravel(), (rows, top.ravel())), shape=similarity.shape)


def tifu_scores(vectors: sparse.csr_matrix, users: np.ndarray, k: int, alpha: float) -> np.ndarray:
    """[U, M] alpha * own vector + (1 - alpha) * mean of the k most cosine-similar other customers' vectors."""
    norms = np.sqrt(np.asarray(vectors.multiply(vectors).sum(axis=1))).ravel()
    unit = sparse.diags(1.0 / np.maximum(norms, 1e-12)) @ vectors
    similarity = (unit[users] @ unit.T).toarray()
    similarity[np.arange(len(users)), users] = -np.inf  # not one's own neighbour
    neighbours = _top_neighbours(similarity, k)
    neighbours.data[:] = 1.0 / max(1, min(k, similarity.shape[1]))
    return alpha * vectors[users].toarray() + (1.0 - alpha) * (neighbours @ vectors).toarray()


def upcf_popularity(baskets: Baskets, size: int, r: int) -> sparse.csr_matrix:
    """[C, M] share of each customer's last r baskets (r = 0: all) that hold the item."""
    vectors = []
    for own in baskets.baskets:
        recent = own[-r:] if r else own
        vector: dict[int, float] = {}
        for basket in recent:
            for item in set(basket.tolist()):
                vector[item] = vector.get(item, 0.0) + 1.0 / len(recent)
        vectors.append(vector)
    return _rows(vectors, size)


def upcf_scores(
    bought: sparse.csr_matrix, popularity: sparse.csr_matrix, users: np.ndarray, alpha: float, q: float
) -> np.ndarray:
    """[U, M] sum over customers v of asymmetric-cosine(u, v)^q * P_v; u itself has similarity 1."""
    sizes = np.asarray(bought.sum(axis=1)).ravel()
    overlap = (bought[users] @ bought.T).toarray()
    with np.errstate(divide="ignore", invalid="ignore"):
        similarity = overlap / (sizes[users, None] ** alpha * sizes[None, :] ** (1.0 - alpha))
    similarity = np.nan_to_num(similarity, nan=0.0, posinf=0.0)
    neighbours = _top_neighbours(similarity, UPCF_NEIGHBOURS)
    neighbours.data = neighbours.data**q
    return (neighbours @ popularity).toarray()


def _ndcg(scores: np.ndarray, targets: np.ndarray, tiebreak: np.ndarray) -> float:
    return ranking_metrics(top_k(scores + tiebreak[None, :], K), targets)[f"ndcg@{K}"]


def _grid(grid: dict[str, tuple]) -> list[dict]:
    return [dict(zip(grid, values)) for values in itertools.product(*grid.values())]


class NextBasketBaselines:
    """TIFU-KNN and UP-CF@r over one history: `tune` picks parameters, `scores` ranks chosen shoppers' items."""

    def __init__(self, events: Transactions, candidates: list[str]) -> None:
        self.size = len(candidates)
        self.baskets = baskets_of(events, {code: index for index, code in enumerate(candidates)})
        self.row = {customer: row for row, customer in enumerate(self.baskets.customers)}
        bought = [{item: 1.0 for basket in own for item in basket.tolist()} for own in self.baskets.baskets]
        self.bought = _rows(bought, self.size)
        self._vectors: dict[tuple, sparse.csr_matrix] = {}  # the grids share vectors across their other parameters

    def scores(self, method: str, params: dict, customers: list[int]) -> np.ndarray:
        """[U, M] for customers of the history (others score 0 everywhere)."""
        users = np.array([self.row.get(c, -1) for c in customers], np.int64)
        present = users >= 0
        out = np.zeros((len(customers), self.size))
        if not present.any():
            return out
        if method == "tifu_knn":
            key = ("tifu", params["m"], params["r"])
            if key not in self._vectors:
                self._vectors[key] = tifu_vectors(self.baskets, self.size, params["m"], params["r"])
            vectors = self._vectors[key]
            out[present] = tifu_scores(vectors, users[present], params["k"], params["alpha"])
        else:
            key = ("upcf", params["r"])
            if key not in self._vectors:
                self._vectors[key] = upcf_popularity(self.baskets, self.size, params["r"])
            popularity = self._vectors[key]
            out[present] = upcf_scores(self.bought, popularity, users[present], params["alpha"], params["q"])
        return out


def tune(history: Transactions, candidates: list[str], tiebreak: np.ndarray) -> dict[str, dict]:
    """Each method's parameters with the best NDCG@10 when the history's last VALIDATION_DAYS are the targets."""
    cut = history.invoiced_at.max() - np.timedelta64(VALIDATION_DAYS, "D") if len(history) else None
    chosen = {"tifu_knn": _grid(TIFU_GRID)[-1], "up_cf_r": {"r": 0, "alpha": 0.5, "q": 5}}
    if cut is None:
        return {name: {"params": params, "validation_ndcg@10": None} for name, params in chosen.items()}
    earlier = history.select(history.invoiced_at < cut)
    later = history.select(history.invoiced_at >= cut)
    position = {code: index for index, code in enumerate(candidates)}
    baselines = NextBasketBaselines(earlier, candidates)
    customers = sorted(set(later.customer_id.tolist()) & set(baselines.row))
    row = {customer: r for r, customer in enumerate(customers)}
    targets = np.zeros((len(customers), len(candidates)), dtype=bool)
    for customer, code in zip(later.customer_id.tolist(), later.stock_code.tolist()):
        if customer in row and code in position:
            targets[row[customer], position[code]] = True
    report = {}
    for name, grid in (("tifu_knn", TIFU_GRID), ("up_cf_r", UPCF_GRID)):
        results = []
        for params in _grid(grid) if customers else []:
            results.append((_ndcg(baselines.scores(name, params, customers), targets, tiebreak), params))
        best = max(results, key=lambda result: result[0]) if results else (None, chosen[name])
        report[name] = {"params": best[1], "validation_ndcg@10": best[0], "validation_users": len(customers)}
    return report
