"""The edge's served state: one immutable, versioned object (the regions' catalogs, the model, the experiments)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Mapping

from models.runtime import Ranker
from origin_sync.replica import Replica

from .catalog import RegionCatalog
from .experiments import Experiments, build_experiments


@dataclass(frozen=True)
class EdgeState:
    """Everything a request reads, at one data version; sync builds the next one beside it and swaps."""

    data_version: int
    model: Ranker
    catalogs: Mapping[str, RegionCatalog]
    built_at: float = field(default_factory=time.time)
    experiments: Experiments | None = None  # running experiments of this data version, None when there are none

    @classmethod
    def build(cls, replica: Replica, model: Ranker, rankers: Mapping[str, Ranker] | None = None) -> "EdgeState":
        """`rankers` (by sha256) holds the loaded models of experiment variants; a variant whose model is not
        there (refused at load) leaves its experiment out of this state."""
        by_region: dict[str, list[dict[str, Any]]] = {r: [] for r in replica.regions}
        for offer in replica.offers.values():
            for region in offer["regions"]:
                if region in by_region:
                    by_region[region].append(offer)
        catalogs = {r: RegionCatalog.build(r, offers, model) for r, offers in by_region.items()}
        experiments = build_experiments(replica, by_region, model, catalogs, rankers or {})
        return cls(data_version=replica.version, model=model, catalogs=catalogs, experiments=experiments)


class StateHolder:
    """The one mutable reference of the edge: the current state, replaced whole by the syncer."""

    __slots__ = ("current",)

    def __init__(self) -> None:
        self.current: EdgeState | None = None
