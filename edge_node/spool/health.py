"""The edge's health counters per (experiment, variant, region, model): every answer the model was asked for, its
fallbacks and model errors, and its model time as a histogram; taken whole by the shipper for the next batch."""

from __future__ import annotations

from typing import Any

from origin_sync.wire.health import BUCKETS, bucket_of

MODEL_ERROR = "model_error"


class HealthCounters:
    """Counts in memory since the last `take()` (lost with the process: a guardrail signal, not accounting)."""

    def __init__(self) -> None:
        self._counts: dict[tuple[str | None, str | None, str, str], list[int]] = {}

    def record(
        self,
        experiment: str | None,
        variant: str | None,
        region: str,
        model_version: str,
        fallback: str | None,
        model_s: float,
    ) -> None:
        key = (experiment, variant, region, model_version)
        counts = self._counts.get(key)
        if counts is None:
            counts = self._counts[key] = [0] * (3 + BUCKETS)
        counts[0] += 1
        if fallback is not None:
            counts[1] += 1
            if fallback == MODEL_ERROR:
                counts[2] += 1
        else:
            counts[3 + bucket_of(model_s * 1000.0)] += 1

    def take(self) -> list[list[Any]]:
        """The rows since the last take (wire.health.HealthRow's order), and start again from zero."""
        counts, self._counts = self._counts, {}
        return [[*key, c[0], c[1], c[2], c[3:]] for key, c in counts.items()]
