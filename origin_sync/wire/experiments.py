"""A/B experiments as synced data: their validated wire form, and the deterministic shopper-to-variant assignment
that every edge (and the report) computes the same way."""

from __future__ import annotations

import bisect
import hashlib
import math
from typing import Annotated, Any

import msgspec

from origin_sync.wire.fields import (
    ID_RULE,
    MAX_BOOST,
    MAX_ID_CHARS,
    NAME_RULE,
    Boost,
    Id,
    Name,
    RegionCode,
    SchemaError,
    Timestamp,
    epoch_seconds,
    explain,
)

BUCKETS = 10_000
MAX_VARIANTS = 10
MAX_BOOSTS = 1_000
MAX_GROUP_LIMIT = 1000


class InvalidExperiment(SchemaError):
    """An experiment sent to the admin API is not valid; the message names the field."""


class Variant(msgspec.Struct, forbid_unknown_fields=True):
    """One arm of an experiment: its share of traffic and what it changes (the model, the group limit, boosts)."""

    name: Name
    weight: Annotated[float, msgspec.Meta(gt=0, le=1_000_000)] = 1.0
    model: Id | None = None  # a published model version; None: the active model
    max_per_group: Annotated[int, msgspec.Meta(ge=0, le=MAX_GROUP_LIMIT)] | None = None  # None: the edge's setting
    boosts: Annotated[dict[Id, Boost], msgspec.Meta(max_length=MAX_BOOSTS)] | None = None  # offer id -> extra boost


class Experiment(msgspec.Struct, forbid_unknown_fields=True):
    """An A/B experiment as the admin API takes it (its id may come from the URL); the first variant is the
    control."""

    variants: Annotated[list[Variant], msgspec.Meta(min_length=2, max_length=MAX_VARIANTS)]
    id: Id | None = None
    start: Timestamp = None
    end: Timestamp = None
    salt: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ID_CHARS)] | msgspec.UnsetType = msgspec.UNSET
    regions: list[RegionCode] | None = None  # None or empty: every region


EXPERIMENT_FIELDS = tuple(Experiment.__struct_fields__)
VARIANT_FIELDS = tuple(Variant.__struct_fields__)
_TIME_RULE = "expected an ISO 8601 date-time, epoch seconds or null"
EXPERIMENT_RULES = {
    "id": ID_RULE,
    "variants": f"a list of 2 to {MAX_VARIANTS} variants, the control first, each an object with name, weight "
    "and optional model, max_per_group, boosts",
    "start": _TIME_RULE,
    "end": _TIME_RULE,
    "salt": f"a string of 1-{MAX_ID_CHARS} characters (default: the experiment id)",
    "regions": "a list of two-letter market codes; empty or absent = every region",
    "name": NAME_RULE,
    "weight": "a number > 0",
    "model": "a published model version, or null for the active model",
    "max_per_group": f"an integer 0-{MAX_GROUP_LIMIT} (0 = no limit), or null for the edge's setting",
    "boosts": f"an object of at most {MAX_BOOSTS} offer ids ({ID_RULE}) mapped to extra boosts, numbers between "
    f"-{MAX_BOOST:g} and {MAX_BOOST:g}",
}


def _variant(variant: Variant) -> dict[str, Any]:
    return {
        "name": variant.name,
        "weight": variant.weight,
        "model": variant.model,
        "max_per_group": variant.max_per_group,
        "boosts": dict(sorted((variant.boosts or {}).items())),
    }


def _empty_as_absent(payload: dict[str, Any]) -> dict[str, Any]:
    """Empty regions and boosts, whatever JSON value says so ([] for an empty map, as some encoders write it),
    mean none, as the admin API has always taken them."""
    if "regions" in payload and not payload["regions"]:
        payload = {**payload, "regions": None}
    variants = payload.get("variants")
    if isinstance(variants, list) and any(isinstance(v, dict) and "boosts" in v and not v["boosts"] for v in variants):
        payload = {
            **payload,
            "variants": [
                {**v, "boosts": None} if isinstance(v, dict) and "boosts" in v and not v["boosts"] else v
                for v in variants
            ],
        }
    return payload


def validate_experiment(payload: object, experiment_id: str | None = None) -> dict[str, Any]:
    """Check an admin-supplied experiment and return its canonical form (the first variant is the control)."""
    if not isinstance(payload, dict):
        raise InvalidExperiment("experiment must be a JSON object")
    try:
        experiment = msgspec.convert(_empty_as_absent(payload), Experiment)
    except msgspec.ValidationError as exc:
        unknown = sorted(set(payload) - set(EXPERIMENT_FIELDS))
        raise InvalidExperiment(
            f"unknown field(s): {', '.join(unknown)}" if unknown else explain(exc, EXPERIMENT_RULES)
        ) from None
    eid = payload.get("id", experiment_id)
    if experiment_id is not None and eid != experiment_id:
        raise InvalidExperiment(f"id: body says {eid!r} but the path says {experiment_id!r}")
    if not isinstance(eid, str):
        raise InvalidExperiment(f"id: {ID_RULE}")
    if len({v.name for v in experiment.variants}) != len(experiment.variants):
        raise InvalidExperiment("variants: names must be unique")
    start = epoch_seconds(experiment.start, "start", InvalidExperiment)
    end = epoch_seconds(experiment.end, "end", InvalidExperiment)
    if start is not None and end is not None and end <= start:
        raise InvalidExperiment("end must be after start")
    salt = eid if experiment.salt is msgspec.UNSET else experiment.salt
    return {
        "id": eid,
        "variants": [_variant(v) for v in experiment.variants],
        "start": start,
        "end": end,
        "salt": salt,
        "regions": sorted(set(experiment.regions or ())),
    }


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
        shared = (
            sorted(set(experiment.get("regions") or ()) & set(other.get("regions") or ()))
            or sorted(set(experiment.get("regions") or ()) | set(other.get("regions") or ()))
            or ["every region"]
        )
        raise ExperimentOverlap(
            f"experiment {other['id']!r} already runs in {', '.join(shared)} during part of "
            "this window; stop it (or move this one's start past its end) first"
        )


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
