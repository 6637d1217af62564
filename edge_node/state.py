"""The edge's served state: one immutable, versioned object (the regions' catalogs, the model, the experiments)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import cached_property
from typing import Mapping

from models.runtime import Ranker
from origin_sync.replica import Replica

from .catalog import RegionCatalog
from .experiments import Experiments, build_experiments
from .rules import offers_by_region


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
        by_region = offers_by_region(replica.offers.values(), replica.regions)
        catalogs = {r: RegionCatalog.build(r, offers, model) for r, offers in by_region.items()}
        experiments = build_experiments(replica, by_region, model, catalogs, rankers or {})
        return cls(data_version=replica.version, model=model, catalogs=catalogs, experiments=experiments)

    @cached_property
    def context_length(self) -> int:
        """The most purchase events a request may send: the shortest context of the models this state serves
        (the edge's and its experiments' variants'), so that whether a request is valid never depends on the
        variant a shopper is bucketed into."""
        lengths = [self.model.context_length]
        if self.experiments is not None:
            lengths += [
                v.model.context_length
                for plans in self.experiments.by_region.values()
                for plan in plans
                for v in plan.variants
            ]
        return min(lengths)


class StateHolder:
    """The one mutable reference of the edge: the current state, replaced whole by the syncer."""

    __slots__ = ("current",)

    def __init__(self) -> None:
        self.current: EdgeState | None = None
