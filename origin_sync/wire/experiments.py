"""A/B experiments as synced data: their validated wire form, and the deterministic shopper-to-variant assignment
that every edge (and the report) computes the same way."""

from __future__ import annotations

import bisect
import hashlib
import math
import re
from typing import Any

from origin_sync.wire.protocol import (
    MAX_BOOST,
    InvalidOffer,
    _timestamp,
    is_region_code,
)

BUCKETS = 10_000
MAX_VARIANTS = 10
MAX_BOOSTS = 1_000
_NAME_RE = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
EXPERIMENT_FIELDS = ("id", "variants", "start", "end", "salt", "regions")
VARIANT_FIELDS = ("name", "weight", "model", "max_per_group", "boosts")


class InvalidExperiment(InvalidOffer):
    """An experiment sent to the admin API is not valid; the message names the field."""


def _variant(raw: object, index: int) -> dict[str, Any]:
    where = f"variants[{index}]"
    if not isinstance(raw, dict):
        raise InvalidExperiment(f"{where}: expected an object with name, weight and optional model, "
                                "max_per_group, boosts")
    unknown = sorted(set(raw) - set(VARIANT_FIELDS))
    if unknown:
        raise InvalidExperiment(f"{where}: unknown field(s): {', '.join(unknown)}")
    name = raw.get("name")
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise InvalidExperiment(f"{where}.name: 1-64 characters of letters, digits and . _ : -")
    weight = raw.get("weight", 1)
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) \
            or not 0 < weight <= 1_000_000:
        raise InvalidExperiment(f"{where}.weight: a number > 0")
    model = raw.get("model")
    if model is not None and (not isinstance(model, str) or not _ID_RE.match(model)):
        raise InvalidExperiment(f"{where}.model: a published model version, or null for the active model")
    max_per_group = raw.get("max_per_group")
    if max_per_group is not None and (isinstance(max_per_group, bool) or not isinstance(max_per_group, int)
                                      or not 0 <= max_per_group <= 1000):
        raise InvalidExperiment(f"{where}.max_per_group: an integer 0-1000 (0 = no limit), or null for the "
                                "edge's setting")
    boosts = raw.get("boosts") or {}
    if not isinstance(boosts, dict) or len(boosts) > MAX_BOOSTS:
        raise InvalidExperiment(f"{where}.boosts: an object of at most {MAX_BOOSTS} offer id -> extra boost")
    for offer_id, boost in boosts.items():
        if not _ID_RE.match(offer_id) or isinstance(boost, bool) or not isinstance(boost, (int, float)) \
                or not math.isfinite(boost) or abs(boost) > MAX_BOOST:
            raise InvalidExperiment(f"{where}.boosts: offer ids mapped to numbers between -{MAX_BOOST:g} and "
                                    f"{MAX_BOOST:g}")
    return {"name": name, "weight": float(weight), "model": model, "max_per_group": max_per_group,
            "boosts": {k: float(v) for k, v in sorted(boosts.items())}}


def validate_experiment(payload: object, experiment_id: str | None = None) -> dict[str, Any]:
    """Check an admin-supplied experiment and return its canonical form (the first variant is the control)."""
    if not isinstance(payload, dict):
        raise InvalidExperiment("experiment must be a JSON object")
    unknown = sorted(set(payload) - set(EXPERIMENT_FIELDS))
    if unknown:
        raise InvalidExperiment(f"unknown field(s): {', '.join(unknown)}")
    eid = payload.get("id", experiment_id)
    if experiment_id is not None and eid != experiment_id:
        raise InvalidExperiment(f"id: body says {eid!r} but the path says {experiment_id!r}")
    if not isinstance(eid, str) or not _ID_RE.match(eid):
        raise InvalidExperiment("id: 1-128 characters of letters, digits and . _ : -")
    variants = payload.get("variants")
    if not isinstance(variants, list) or not 2 <= len(variants) <= MAX_VARIANTS:
        raise InvalidExperiment(f"variants: a list of 2 to {MAX_VARIANTS} variants, the control first")
    checked = [_variant(v, i) for i, v in enumerate(variants)]
    if len({v["name"] for v in checked}) != len(checked):
        raise InvalidExperiment("variants: names must be unique")
    try:
        start = _timestamp(payload.get("start"), "start")
        end = _timestamp(payload.get("end"), "end")
    except InvalidOffer as exc:
        raise InvalidExperiment(str(exc)) from None
    if start is not None and end is not None and end <= start:
        raise InvalidExperiment("end must be after start")
    salt = payload.get("salt", eid)
    if not isinstance(salt, str) or not 1 <= len(salt) <= 128:
        raise InvalidExperiment("salt: a string of 1-128 characters (default: the experiment id)")
    regions = payload.get("regions") or []
    if not isinstance(regions, list) or not all(is_region_code(r) for r in regions):
        raise InvalidExperiment("regions: a list of two-letter market codes; empty or absent = every region")
    return {"id": eid, "variants": checked, "start": start, "end": end, "salt": salt,
            "regions": sorted(set(regions))}


class ExperimentOverlap(InvalidExperiment):
    """Another experiment already covers one of the regions for part of the same time: a shopper could then be
    in two experiments at once, and neither report would be sound."""


def _window(experiment: dict[str, Any]) -> tuple[float, float]:
    start, end = experiment.get("start"), experiment.get("end")
    return (-math.inf if start is None else float(start), math.inf if end is None else float(end))


def overlapping(experiment: dict[str, Any], others: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The first of `others` (another id) that shares a region (no regions = every region) and part of the time
    window with `experiment`, or None."""
    start, end = _window(experiment)
    regions = set(experiment.get("regions") or ())
    for other in others:
        if other["id"] == experiment["id"]:
            continue
        other_regions = set(other.get("regions") or ())
        if regions and other_regions and not regions & other_regions:
            continue
        other_start, other_end = _window(other)
        if start < other_end and other_start < end:
            return other
    return None


def check_no_overlap(experiment: dict[str, Any], others: list[dict[str, Any]]) -> None:
    """ExperimentOverlap naming the experiment in the way, if any."""
    other = overlapping(experiment, others)
    if other is not None:
        shared = sorted(set(experiment.get("regions") or ()) & set(other.get("regions") or ())) or \
            sorted(set(experiment.get("regions") or ()) | set(other.get("regions") or ())) or ["every region"]
        raise ExperimentOverlap(f"experiment {other['id']!r} already runs in {', '.join(shared)} during part of "
                                "this window; stop it (or move this one's start past its end) first")


def bucket_of(salt: str, shopper_id: str) -> int:
    """The shopper's bucket in [0, 10000): a stable keyed hash, the same on every edge, replica and restart."""
    digest = hashlib.blake2b(shopper_id.encode(), digest_size=8, key=hashlib.sha256(salt.encode()).digest()).digest()
    return int.from_bytes(digest, "big") % BUCKETS


def bucket_bounds(weights: list[float]) -> tuple[int, ...]:
    """Upper bucket bound (exclusive) of each variant, from the traffic weights; the last is always BUCKETS."""
    total = sum(weights)
    bounds, running = [], 0.0
    for w in weights:
        running += w
        bounds.append(round(BUCKETS * running / total))
    bounds[-1] = BUCKETS
    return tuple(bounds)


def variant_index(bounds: tuple[int, ...], bucket: int) -> int:
    return bisect.bisect_right(bounds, bucket)


def assign(experiment: dict[str, Any], shopper_id: str) -> str:
    """The variant name a shopper gets in an experiment (what an edge computes, for reports and tests)."""
    bounds = bucket_bounds([v["weight"] for v in experiment["variants"]])
    name: str = experiment["variants"][variant_index(bounds, bucket_of(experiment["salt"], shopper_id))]["name"]
    return name
