"""The edge's served state: one immutable, versioned object (the regions' catalogs, the model, the experiments)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
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
    # What it was built from (the replica's offers and experiments maps, the models), compared by identity.
    sources: tuple[object, ...] = field(default=(), compare=False, repr=False)

    @classmethod
    def build(
        cls,
        replica: Replica,
        model: Ranker,
        rankers: Mapping[str, Ranker] | None = None,
        previous: "EdgeState | None" = None,
    ) -> "EdgeState":
        """`rankers` (by sha256) holds the loaded models of experiment variants; a variant whose model is not
        there (refused at load) leaves its experiment out of this state. A version that changed none of what
        `previous` was built from (a batch of profile changes: the replica keeps its offers and experiments maps
        then) takes `previous`'s catalogs and experiments as they are, instead of laying out every offer again
        (hundreds of ms for 100,000 offers, holding the interpreter the requests need meanwhile)."""
        sources = (replica.offers, replica.experiments, model, replica.regions, *sorted((rankers or {}).items()))
        if previous is not None and _same_sources(previous.sources, sources):
            return replace(previous, data_version=replica.version, built_at=time.time())
        by_region = offers_by_region(replica.offers.values(), replica.regions)
        catalogs = {r: RegionCatalog.build(r, offers, model) for r, offers in by_region.items()}
        experiments = build_experiments(replica, by_region, model, catalogs, rankers or {})
        return cls(
            data_version=replica.version, model=model, catalogs=catalogs, experiments=experiments, sources=sources
        )

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


def _same_sources(before: tuple[object, ...], now: tuple[object, ...]) -> bool:
    """The same maps and models (by identity: the replica replaces a map it changes), the same regions and
    variant models (the same objects under the same sha256)."""
    if len(before) != len(now) or any(a is not b for a, b in zip(before[:3], now[:3])) or before[3:4] != now[3:4]:
        return False
    return all(a[0] == b[0] and a[1] is b[1] for a, b in zip(before[4:], now[4:]))  # type: ignore[index]


class StateHolder:
    """The one mutable reference of the edge: the current state, replaced whole by the syncer."""

    __slots__ = ("current",)

    def __init__(self) -> None:
        self.current: EdgeState | None = None
