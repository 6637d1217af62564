"""One region's offers at one data version, laid out as the arrays the ranker takes, with the rules' inputs and the
pre-rendered answer fragments."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import orjson

from models.runtime import Ranker

NEG_INF = np.float32(-np.inf)
NO_GROUP = -1


@dataclass(frozen=True)
class RegionCatalog:
    """One region's offers, laid out once per data version as arrays the ranker takes as they are."""

    region: str
    region_index: int
    offer_ids: tuple[str, ...]
    candidates: np.ndarray      # int64 [N]: model item index of each offer
    base_adjust: np.ndarray     # float32 [N]: campaign boost, or -inf where stock or price rule the offer out
    active_from: np.ndarray     # float64 [N]: epoch seconds, -inf when open
    active_to: np.ndarray       # float64 [N]: epoch seconds, +inf when open
    has_windows: bool
    groups: np.ndarray          # int32 [N]: product group id, NO_GROUP when the offer has none
    popularity: np.ndarray      # float32 [N]: the model's score for an empty context (the fallback ranking)
    fragments_json: tuple[bytes, ...]  # each offer's part of the answer, open for its score: b'{"offer_id":...,"score":'
    positions: Mapping[str, tuple[int, ...]]  # offer id and sku -> positions, for exclusions

    def __len__(self) -> int:
        return len(self.offer_ids)

    @classmethod
    def build(cls, region: str, offers: list[dict[str, Any]], ranker: Ranker,
              extra_boosts: Mapping[str, float] | None = None) -> "RegionCatalog":
        """`extra_boosts` (offer id -> boost) are an experiment variant's campaign boosts, added to the offers' own."""
        offers = sorted(offers, key=lambda o: o["id"])
        extra = extra_boosts or {}
        n = len(offers)
        candidates = np.ascontiguousarray(
            ranker.item_indices([o["sku"] for o in offers]) if n else np.zeros(0), dtype=np.int64)
        base_adjust = np.array(
            [float(o.get("boost") or 0.0) + extra.get(o["id"], 0.0) if o["stock"] > 0 and o["price"] > 0 else -np.inf
             for o in offers],
            dtype=np.float32)
        active_from = np.array([o["active_from"] if o["active_from"] is not None else -np.inf for o in offers],
                               dtype=np.float64)
        active_to = np.array([o["active_to"] if o["active_to"] is not None else np.inf for o in offers],
                             dtype=np.float64)
        group_ids: dict[str, int] = {}
        groups = np.array([group_ids.setdefault(o["group"], len(group_ids)) if o.get("group") else NO_GROUP
                           for o in offers], dtype=np.int32)
        positions: dict[str, list[int]] = {}
        for i, o in enumerate(offers):
            positions.setdefault(o["id"], []).append(i)
            if o["sku"] != o["id"]:
                positions.setdefault(o["sku"], []).append(i)
        region_index = ranker.region_index(region)
        return cls(
            region=region,
            region_index=region_index,
            offer_ids=tuple(o["id"] for o in offers),
            candidates=candidates,
            base_adjust=base_adjust,
            active_from=active_from,
            active_to=active_to,
            has_windows=bool(np.isfinite(active_from).any() or np.isfinite(active_to).any()),
            groups=groups,
            popularity=_popularity(ranker, region_index, candidates),
            fragments_json=tuple(orjson.dumps({"offer_id": o["id"], "sku": o["sku"], "title": o["title"],
                                               "price": o["price"], "currency": o["currency"]})[:-1] + b',"score":'
                                 for o in offers),
            positions={k: tuple(v) for k, v in positions.items()},
        )

    def adjust_at(self, now: float) -> np.ndarray:
        """The score adjustment at time `now` (a fresh array): boosts, and -inf for what rules exclude."""
        if not self.has_windows:
            return self.base_adjust.copy()
        outside = (now < self.active_from) | (now >= self.active_to)
        return np.where(outside, NEG_INF, self.base_adjust)

    def rank_by_popularity(self, adjust: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The fallback ranking when the model cannot answer: regional popularity plus the same rules."""
        scores = self.popularity + adjust
        k = min(k, len(scores))
        if k == 0:
            return np.empty(0, dtype=np.float32), np.empty(0, dtype=np.int64)
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.argsort(-scores[top], kind="stable")]
        return scores[top], top.astype(np.int64)


def _popularity(ranker: Ranker, region_index: int, candidates: np.ndarray) -> np.ndarray:
    """Score every candidate for a shopper with no history: the model's own regional popularity prior."""
    n = len(candidates)
    popularity = np.zeros(n, dtype=np.float32)
    if n:
        empty = np.zeros(ranker.context_length, dtype=np.int64)
        scores, positions = ranker.rank(empty, region_index, candidates, np.zeros(n, dtype=np.float32), n)
        popularity[positions] = scores
    return popularity
