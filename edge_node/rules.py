"""The business rules, each in one place: where an offer is served (region), whether it can be (stock, price), when
(campaign windows), how much it is lifted (boosts), what one shopper is not shown (exclusions, just bought) and how
many offers of one product group an answer holds (diversity)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import numpy as np

NEG_INF = np.float32(-np.inf)
NO_GROUP = -1


@dataclass(frozen=True)
class Rules:
    """Business rules the edge applies (configured per edge; offers carry boosts and groups)."""

    max_per_group: int = 0  # diversity: at most this many offers of one product group; 0 = no limit
    just_bought_days: float = 1.0  # exclude items the shopper bought this recently (needs age_days)
    model_budget_ms: float = 25.0  # a model run slower than this opens the breaker
    breaker_cooldown_s: float = 5.0  # how long answers come from the fallback after an overrun


def offers_by_region(offers: Iterable[dict[str, Any]], regions: Iterable[str]) -> dict[str, list[dict[str, Any]]]:
    """The region rule: an offer is served in every region it names that this edge serves, and nowhere else."""
    by_region: dict[str, list[dict[str, Any]]] = {r: [] for r in regions}
    for offer in offers:
        for region in offer["regions"]:
            if region in by_region:
                by_region[region].append(offer)
    return by_region


@dataclass(frozen=True, slots=True)
class OfferRules:
    """One region's offers' rule inputs, laid out once per data version (in the catalog's order); `mask` applies
    them to one request."""

    base: np.ndarray  # float32 [N]: campaign boost, or -inf where stock or price rule the offer out
    active_from: np.ndarray  # float64 [N]: epoch seconds, -inf when open
    active_to: np.ndarray  # float64 [N]: epoch seconds, +inf when open
    has_windows: bool
    groups: np.ndarray  # int32 [N]: product group id, NO_GROUP when the offer has none
    has_groups: bool
    positions: Mapping[str, tuple[int, ...]]  # offer id and sku -> positions, for exclusions

    @classmethod
    def build(cls, offers: list[dict[str, Any]], extra_boosts: Mapping[str, float]) -> OfferRules:
        """`offers` in the catalog's order; `extra_boosts` (offer id -> boost) are an experiment variant's, added to
        the offers' own."""
        # Stock and price: an offer out of stock or without a price is never shown.
        base = np.array(
            [
                float(o.get("boost") or 0.0) + extra_boosts.get(o["id"], 0.0)
                if o["stock"] > 0 and o["price"] > 0
                else -np.inf
                for o in offers
            ],
            dtype=np.float32,
        )
        active_from = np.array(
            [o["active_from"] if o["active_from"] is not None else -np.inf for o in offers], dtype=np.float64
        )
        active_to = np.array(
            [o["active_to"] if o["active_to"] is not None else np.inf for o in offers], dtype=np.float64
        )
        group_ids: dict[str, int] = {}
        groups = np.array(
            [group_ids.setdefault(o["group"], len(group_ids)) if o.get("group") else NO_GROUP for o in offers],
            dtype=np.int32,
        )
        positions: dict[str, list[int]] = {}
        for i, o in enumerate(offers):
            positions.setdefault(o["id"], []).append(i)
            if o["sku"] != o["id"]:
                positions.setdefault(o["sku"], []).append(i)
        return cls(
            base=base,
            active_from=active_from,
            active_to=active_to,
            has_windows=bool(np.isfinite(active_from).any() or np.isfinite(active_to).any()),
            groups=groups,
            has_groups=bool(group_ids),
            positions={k: tuple(v) for k, v in positions.items()},
        )

    def mask(
        self,
        now: float,
        exclude: Iterable[str],
        items: Iterable[str],
        ages_days: Iterable[float] | None,
        just_bought_days: float,
    ) -> np.ndarray:
        """Every rule for one request, as float32 penalties per offer (a fresh, read-only array): -inf where a rule
        rules the offer out, its boost elsewhere."""
        if self.has_windows:  # campaign windows: an offer is shown from active_from until before active_to
            outside = (now < self.active_from) | (now >= self.active_to)
            adjust = np.where(outside, NEG_INF, self.base)
        else:
            adjust = self.base.copy()
        positions = self.positions
        for key in exclude:  # what the request itself asks not to see
            for pos in positions.get(key, ()):
                adjust[pos] = NEG_INF
        if ages_days is not None and just_bought_days > 0:  # what the shopper has just bought
            for sku, age in zip(items, ages_days):
                if age <= just_bought_days:  # NaN (age not sent) compares False
                    for pos in positions.get(sku, ()):
                        adjust[pos] = NEG_INF
        adjust.flags.writeable = False
        return adjust


def diversify(scores: list[float], positions: list[int], groups: np.ndarray, k: int, limit: int) -> list[int]:
    """Diversity: keep the best-ranked offers, at most `limit` of any one product group, up to k, none ruled out
    (a greedy pass over a few dozen)."""
    kept: list[int] = []
    per_group: dict[int, int] = {}
    for score, pos in zip(scores, positions):
        if score == -np.inf:
            break
        group = int(groups[pos])
        if group != NO_GROUP:
            if per_group.get(group, 0) >= limit:
                continue
            per_group[group] = per_group.get(group, 0) + 1
        kept.append(pos)
        if len(kept) == k:
            break
    return kept


def drop_ruled_out(scores: list[float], positions: list[int]) -> tuple[list[float], list[int]]:
    """The cut at the first offer a rule ruled out (ranked last, at -inf): an answer never shows one."""
    cut = next((i for i, s in enumerate(scores) if s == -np.inf), len(scores))
    return scores[:cut], positions[:cut]
