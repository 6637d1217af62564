"""One region's offers at one data version, laid out as the arrays the ranker takes, with the rules' inputs
(edge_node.rules), the fallback's popularity ranking and the pre-rendered answer fragments."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import orjson

from models.runtime import Ranker

from .rules import OfferRules


@dataclass(frozen=True)
class RegionCatalog:
    """One region's offers, laid out once per data version as arrays the ranker takes as they are."""

    region: str
    region_index: int
    offer_ids: tuple[str, ...]
    skus: tuple[str, ...]  # each offer's SKU, the key of the model's vocabulary and of shopper profiles
    candidates: np.ndarray  # int64 [N]: model item index of each offer
    rules: OfferRules  # stock, price, boosts, windows, groups and exclusion keys, in the same order
    popularity: np.ndarray  # float32 [N]: the model's score for an empty context (the fallback ranking)
    fragments_json: tuple[
        bytes, ...
    ]  # each offer's part of the answer, open for its score: b'{"offer_id":...,"score":'

    def __len__(self) -> int:
        return len(self.offer_ids)

    @classmethod
    def build(
        cls, region: str, offers: list[dict[str, Any]], ranker: Ranker, extra_boosts: Mapping[str, float] | None = None
    ) -> "RegionCatalog":
        """`extra_boosts` (offer id -> boost) are an experiment variant's campaign boosts, added to the offers' own."""
        offers = sorted(offers, key=lambda o: o["id"])
        # The SKUs are kept (one string per distinct SKU, copied): the offers they come from are decoded for this
        # build and go after it, and a string of theirs kept would keep their memory pools from being freed.
        # (Each offer's own "sku" is set to that copy, an equal string, for the rules' lookup table built below.)
        distinct: dict[str, str] = {}
        for o in offers:
            o["sku"] = distinct.setdefault(o["sku"], o["sku"].encode().decode())
        skus = tuple(o["sku"] for o in offers)
        candidates = np.ascontiguousarray(ranker.item_indices(list(skus)) if offers else np.zeros(0), dtype=np.int64)
        region_index = ranker.region_index(region)
        return cls(
            region=region,
            region_index=region_index,
            offer_ids=tuple(o["id"] for o in offers),
            skus=skus,
            candidates=candidates,
            rules=OfferRules.build(offers, extra_boosts or {}),
            popularity=_popularity(ranker, region_index, candidates),
            fragments_json=tuple(
                orjson.dumps(
                    {
                        "offer_id": o["id"],
                        "sku": o["sku"],
                        "title": o["title"],
                        "price": o["price"],
                        "currency": o["currency"],
                    }
                )[:-1]
                + b',"score":'
                for o in offers
            ),
        )

    def sku_of(self, offer_or_sku: str) -> str:
        """The SKU an offer id or SKU of a client (an event's, a cart's) names here: the offer's own SKU, else the
        text itself upper-cased (a SKU this region does not offer now)."""
        positions = self.rules.positions.get(offer_or_sku)
        return self.skus[positions[0]] if positions else offer_or_sku.upper()

    def rank_by_popularity(self, adjust: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The fallback ranking when the model cannot score: regional popularity, under the same rule mask."""
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
