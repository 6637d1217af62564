"""Item statistics the ranker reads: smoothed log popularity per region and PPMI-SVD item embeddings."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.data import NO_CUSTOMER, NO_REGION, Transactions

# Small regions borrow strength from the global distribution: this many pseudo-purchases.
REGION_SMOOTHING = 20.0


@dataclass(frozen=True)
class Vocabulary:
    """Index 0 is padding/unknown; item index i+1 is items[i], region index i+1 is regions[i]."""

    items: tuple[str, ...]
    regions: tuple[str, ...]

    def item_index(self) -> dict[str, int]:
        return {code: position + 1 for position, code in enumerate(self.items)}

    def region_index(self) -> dict[str, int]:
        return {code: position + 1 for position, code in enumerate(self.regions)}

    def encode_items(self, stock_codes: np.ndarray) -> np.ndarray:
        lookup = self.item_index()
        return np.array([lookup.get(code, 0) for code in stock_codes.tolist()], dtype=np.int64)

    def encode_regions(self, regions: np.ndarray) -> np.ndarray:
        lookup = self.region_index()
        return np.array([lookup.get(code, 0) for code in regions.tolist()], dtype=np.int64)


def vocabulary_of(purchases: Transactions) -> Vocabulary:
    """Every purchased item and every market that bought something, sorted for stable indices."""
    regions = sorted(set(purchases.region.tolist()) - {NO_REGION})
    return Vocabulary(items=tuple(sorted(set(purchases.stock_code.tolist()))), regions=tuple(regions))


@dataclass(frozen=True)
class ItemStatistics:
    """Per-item tables indexed like the Vocabulary; row/column 0 is the unknown item or region."""

    vocabulary: Vocabulary
    embeddings: np.ndarray  # float64 [V+1, D], row 0 zeros
    global_log_popularity: np.ndarray  # float64 [V+1]
    region_log_popularity: np.ndarray  # float64 [R+1, V+1]; row 0 = global, column 0 = unseen item


def log_popularity(
    vocabulary: Vocabulary, item_indices: np.ndarray, region_indices: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Add-one smoothed global log share, and per-region log share shrunk toward the global one."""
    size = len(vocabulary.items) + 1
    known = item_indices > 0
    global_counts = np.bincount(item_indices[known], minlength=size).astype(np.float64)
    global_counts[0] = 0.0
    global_share = (global_counts + 1.0) / (global_counts.sum() + size)
    region_rows = [np.log(global_share)]
    for region in range(1, len(vocabulary.regions) + 1):
        in_region = known & (region_indices == region)
        counts = np.bincount(item_indices[in_region], minlength=size).astype(np.float64)
        counts[0] = 0.0
        share = (counts + REGION_SMOOTHING * global_share) / (counts.sum() + REGION_SMOOTHING)
        region_rows.append(np.log(share))
    region_log = np.stack(region_rows)
    # The unknown item is "never seen" everywhere, so its base score does not depend on region.
    region_log[:, 0] = np.log(global_share[0])
    return np.log(global_share), region_log


def randomized_svd(matrix: np.ndarray, rank: int, *, seed: int, power_iterations: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Top singular vectors and values of a dense matrix (Halko et al.), deterministic for a seed."""
    rng = np.random.default_rng(seed)
    sketch = min(matrix.shape[1], rank + 16)
    basis, _ = np.linalg.qr(matrix @ rng.standard_normal((matrix.shape[1], sketch)))
    for _ in range(power_iterations):
        basis, _ = np.linalg.qr(matrix.T @ basis)
        basis, _ = np.linalg.qr(matrix @ basis)
    left, singular, _ = np.linalg.svd(basis.T @ matrix, full_matrices=False)
    return (basis @ left)[:, :rank], singular[:rank]


def ppmi_embeddings(
    customer_ids: np.ndarray, item_indices: np.ndarray, item_count: int, *, dim: int, seed: int
) -> np.ndarray:
    """Unit-length item vectors from a truncated SVD of the item-item PPMI over customer histories."""
    size = item_count + 1
    has_item = (item_indices > 0) & (customer_ids != NO_CUSTOMER)
    customers, customer_rows = np.unique(customer_ids[has_item], return_inverse=True)
    bought = np.zeros((len(customers), size), dtype=np.float32)
    bought[customer_rows, item_indices[has_item]] = 1.0
    cooccurrence = (bought.T @ bought).astype(np.float64)
    np.fill_diagonal(cooccurrence, 0.0)
    row_totals = cooccurrence.sum(axis=1)
    # Context-distribution smoothing (power 0.75) keeps rare items from dominating PMI.
    context_totals = row_totals**0.75
    total = cooccurrence.sum()
    with np.errstate(divide="ignore", invalid="ignore"):
        pmi = np.log(cooccurrence * context_totals.sum() / (np.outer(row_totals, context_totals) + 1e-12) + 1e-12)
    ppmi = np.where(cooccurrence > 0, np.maximum(pmi, 0.0), 0.0) if total > 0 else cooccurrence
    rank = min(dim, size - 1)
    vectors, singular = randomized_svd(ppmi, rank, seed=seed)
    embeddings = np.zeros((size, dim), dtype=np.float64)
    embeddings[:, :rank] = vectors * np.sqrt(singular)
    norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
    embeddings = np.divide(embeddings, norms, out=np.zeros_like(embeddings), where=norms > 0)
    embeddings[0] = 0.0  # padding/unknown must contribute nothing to any affinity
    return embeddings


def fit_item_statistics(
    vocabulary: Vocabulary, purchases: Transactions, events: Transactions, *, dim: int = 32, seed: int = 0
) -> ItemStatistics:
    """Popularity from all purchases (customer or not), embeddings from per-customer events."""
    global_log, region_log = log_popularity(
        vocabulary, vocabulary.encode_items(purchases.stock_code), vocabulary.encode_regions(purchases.region)
    )
    embeddings = ppmi_embeddings(
        events.customer_id, vocabulary.encode_items(events.stock_code), len(vocabulary.items), dim=dim, seed=seed
    )
    return ItemStatistics(vocabulary, embeddings, global_log, region_log)
