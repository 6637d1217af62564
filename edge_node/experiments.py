"""Running experiments at the edge: per region, the variants (model, catalogs, rule overrides) and the
precomputed bucket bounds that turn a shopper id into a variant with one hash and one bisect."""

from __future__ import annotations

import hashlib
import logging
import math
from bisect import bisect_right
from dataclasses import dataclass
from typing import Any, Mapping

from models.runtime import Ranker
from origin_sync.replica import Replica
from origin_sync.wire.experiments import BUCKETS, bucket_bounds

from .catalog import RegionCatalog

log = logging.getLogger("edgerec.edge")


@dataclass(frozen=True, slots=True)
class VariantPlan:
    name: str
    model: Ranker
    catalogs: Mapping[str, RegionCatalog]  # the variant's model and boosts laid out per region
    max_per_group: int | None  # None: the edge's own setting


@dataclass(frozen=True, slots=True)
class ExperimentPlan:
    id: str
    salt_key: bytes  # blake2b key derived from the salt (see origin_sync.wire.experiments)
    start: float
    end: float
    bounds: tuple[int, ...]
    variants: tuple[VariantPlan, ...]  # the first is the control

    def variant_for(self, shopper_id: str) -> VariantPlan:
        digest = hashlib.blake2b(shopper_id.encode(), digest_size=8, key=self.salt_key).digest()
        return self.variants[bisect_right(self.bounds, int.from_bytes(digest, "big") % BUCKETS)]


@dataclass(frozen=True, slots=True)
class Experiments:
    """The experiments of one data version, by region, in precedence order (earliest start, then id)."""

    by_region: Mapping[str, tuple[ExperimentPlan, ...]]

    def running(self, region: str, now: float) -> ExperimentPlan | None:
        for plan in self.by_region.get(region, ()):
            if plan.start <= now < plan.end:
                return plan
        return None


def _variant_plan(
    variant: dict[str, Any],
    by_region: Mapping[str, list[dict[str, Any]]],
    default_model: Ranker,
    default_catalogs: Mapping[str, RegionCatalog],
    rankers: Mapping[str, Ranker],
    built: dict[tuple, Mapping[str, RegionCatalog]],
) -> VariantPlan | None:
    ref = variant.get("model_ref")
    model = default_model if ref is None else rankers.get(ref["sha256"])
    if model is None:
        return None
    boosts = variant.get("boosts") or {}
    key = (model.sha256, tuple(sorted(boosts.items())))
    if key not in built:
        if model is default_model and not boosts:
            built[key] = default_catalogs
        else:
            built[key] = {r: RegionCatalog.build(r, offers, model, boosts) for r, offers in by_region.items()}
    return VariantPlan(variant["name"], model, built[key], variant.get("max_per_group"))


def build_experiments(
    replica: Replica,
    by_region: Mapping[str, list[dict[str, Any]]],
    default_model: Ranker,
    default_catalogs: Mapping[str, RegionCatalog],
    rankers: Mapping[str, Ranker],
) -> Experiments | None:
    plans: dict[str, list[ExperimentPlan]] = {r: [] for r in replica.regions}
    built: dict[tuple, Mapping[str, RegionCatalog]] = {}
    for experiment in sorted(replica.experiments.values(), key=lambda e: (e["start"] or -math.inf, e["id"])):
        regions = [r for r in replica.regions if not experiment["regions"] or r in experiment["regions"]]
        if not regions:
            continue
        variants = [
            _variant_plan(v, by_region, default_model, default_catalogs, rankers, built) for v in experiment["variants"]
        ]
        if any(v is None for v in variants):
            log.error("experiment %s is not served here: a variant's model was refused", experiment["id"])
            continue
        plan = ExperimentPlan(
            id=experiment["id"],
            salt_key=hashlib.sha256(experiment["salt"].encode()).digest(),
            start=experiment["start"] if experiment["start"] is not None else -math.inf,
            end=experiment["end"] if experiment["end"] is not None else math.inf,
            bounds=bucket_bounds([v["weight"] for v in experiment["variants"]]),
            variants=tuple(v for v in variants if v is not None),
        )
        for r in regions:
            plans[r].append(plan)
    if not any(plans.values()):
        return None
    return Experiments({r: tuple(p) for r, p in plans.items() if p})


def variant_model_refs(replica: Replica) -> list[dict[str, Any]]:
    """The model refs the replica's experiments need at this edge (those covering one of its regions)."""
    refs = []
    for experiment in replica.experiments.values():
        if experiment["regions"] and not set(experiment["regions"]) & set(replica.regions):
            continue
        refs.extend(v["model_ref"] for v in experiment["variants"] if v.get("model_ref"))
    return refs
