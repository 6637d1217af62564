"""Per-variant health counters an edge ships in its event batches (the batch map's `health`): answers, fallbacks,
model errors and a model-time histogram per (experiment, variant, region, model), so that the origin's guardrails
need no scraping of the edges' Prometheus metrics."""

from __future__ import annotations

import bisect
from typing import Annotated, Any

import msgpack
import msgspec

from origin_sync.wire.fields import ShortText

# Upper bounds (ms) of the model-time buckets; one more bucket beyond the last.
MODEL_MS_BOUNDS = (0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0)
BUCKETS = len(MODEL_MS_BOUNDS) + 1
MAX_HEALTH_ROWS = 10_000
Count = Annotated[int, msgspec.Meta(ge=0)]


class HealthRow(msgspec.Struct, array_like=True, forbid_unknown_fields=True):
    """One (experiment, variant, region, model)'s counts since the edge's last shipped batch."""

    experiment: ShortText | None
    variant: ShortText | None
    region: ShortText
    model_version: ShortText
    answers: Count
    fallbacks: Count
    errors: Count
    model_ms: Annotated[list[Count], msgspec.Meta(min_length=BUCKETS, max_length=BUCKETS)]


def bucket_of(model_ms: float) -> int:
    return bisect.bisect_left(MODEL_MS_BOUNDS, model_ms)


def quantile_ms(buckets: list[int], q: float) -> float | None:
    """The upper bound of the bucket holding the q-quantile (inf beyond the last bound); None without counts."""
    total = sum(buckets)
    if not total:
        return None
    running = 0
    for bound, count in zip((*MODEL_MS_BOUNDS, float("inf")), buckets):
        running += count
        if running >= q * total:
            return float(bound)
    return float("inf")


_DECODER = msgspec.msgpack.Decoder(list[HealthRow])


def batch_health(data: bytes) -> list[dict[str, Any]]:
    """The health rows of a shipped batch (none in batches of edges before them); ValueError for malformed ones.
    The rest of the batch is decode_batch's (events.py)."""
    outer = msgpack.unpackb(data, raw=False, strict_map_key=True)
    rows = outer.get("health") if isinstance(outer, dict) else None
    if rows is None:
        return []
    if not isinstance(rows, list) or len(rows) > MAX_HEALTH_ROWS:
        raise ValueError(f"health: a list of at most {MAX_HEALTH_ROWS} rows")
    try:
        decoded = _DECODER.decode(msgpack.packb(rows, use_bin_type=True))
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise ValueError(f"health: {exc}") from None
    return [msgspec.structs.asdict(row) for row in decoded]
