"""Exact-enough latency histograms: log-spaced buckets 1% wide, mergeable across load processes.

Locust's own statistics round anything under 100 ms to a whole millisecond, which hides the
difference between a 0.6 ms and a 1.4 ms p50; these buckets keep 1% resolution from 1 µs up.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Iterable

GROWTH = 1.01
_INV_LOG = 1.0 / math.log(GROWTH)


def bucket_of(latency_ms: float) -> int:
    micros = max(latency_ms * 1000.0, 1.0)
    return int(math.log(micros) * _INV_LOG)


def bucket_upper_ms(bucket: int) -> float:
    return GROWTH ** (bucket + 1) / 1000.0


@dataclass
class Histogram:
    buckets: dict[int, int] = field(default_factory=dict)
    count: int = 0
    errors: int = 0
    max_ms: float = 0.0

    def add(self, latency_ms: float) -> None:
        b = bucket_of(latency_ms)
        self.buckets[b] = self.buckets.get(b, 0) + 1
        self.count += 1
        if latency_ms > self.max_ms:
            self.max_ms = latency_ms

    def merge(self, other: "Histogram") -> None:
        for b, n in other.buckets.items():
            self.buckets[b] = self.buckets.get(b, 0) + n
        self.count += other.count
        self.errors += other.errors
        self.max_ms = max(self.max_ms, other.max_ms)

    def quantile(self, q: float) -> float | None:
        """Upper edge of the bucket holding the q-quantile (so never optimistic by more than 1%)."""
        if not self.count:
            return None
        rank = q * self.count
        seen = 0
        for b in sorted(self.buckets):
            seen += self.buckets[b]
            if seen >= rank:
                return min(bucket_upper_ms(b), self.max_ms)
        return self.max_ms

    def cdf(self) -> tuple[list[float], list[float]]:
        xs, ys, seen = [], [], 0
        for b in sorted(self.buckets):
            seen += self.buckets[b]
            xs.append(min(bucket_upper_ms(b), self.max_ms))
            ys.append(seen / self.count)
        return xs, ys

    def to_json(self) -> dict[str, Any]:
        return {
            "buckets": {str(b): n for b, n in self.buckets.items()},
            "count": self.count,
            "errors": self.errors,
            "max_ms": self.max_ms,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Histogram":
        return cls({int(b): n for b, n in data["buckets"].items()}, data["count"], data["errors"], data["max_ms"])


class LatencyRecorder:
    """Per request kind histograms of one load process, counting only after the warm-up."""

    def __init__(self, warmup_s: float = 0.0) -> None:
        self.warmup_s = warmup_s
        self.kinds: dict[str, Histogram] = {}
        self.first_seen: float | None = None
        self.window_start: float | None = None
        self.window_end: float | None = None
        self.count = 0

    def record(self, kind: str, latency_ms: float, failed: bool, start_time: float | None) -> None:
        now = time.time()
        started = start_time if start_time is not None else now - latency_ms / 1000.0
        if self.first_seen is None:
            self.first_seen = started
        if started < self.first_seen + self.warmup_s:
            return
        if self.window_start is None:
            self.window_start = started
        self.window_end = now
        hist = self.kinds.get(kind)
        if hist is None:
            hist = self.kinds[kind] = Histogram()
        if failed:
            hist.errors += 1
        else:
            hist.add(latency_ms)
        self.count += 1

    def to_json(self) -> dict[str, Any]:
        return {
            "window": [self.window_start, self.window_end],
            "kinds": {k: h.to_json() for k, h in self.kinds.items()},
        }


@dataclass
class Measurement:
    """Merged latencies of all load processes of one run, with the time window they cover."""

    total: Histogram
    kinds: dict[str, Histogram]
    window_start: float
    window_end: float

    @property
    def seconds(self) -> float:
        return max(self.window_end - self.window_start, 1e-9)

    @property
    def rps(self) -> float:
        return (self.total.count + self.total.errors) / self.seconds

    @classmethod
    def merge(cls, parts: Iterable[dict[str, Any]]) -> "Measurement | None":
        total, kinds = Histogram(), {}
        starts, ends = [], []
        for part in parts:
            start, end = part["window"]
            if start is None:
                continue
            starts.append(start)
            ends.append(end)
            for kind, data in part["kinds"].items():
                hist = Histogram.from_json(data)
                kinds.setdefault(kind, Histogram()).merge(hist)
                total.merge(hist)
        if not starts:
            return None
        # The processes ran side by side: the union of their windows (a conservative rate).
        return cls(total, kinds, min(starts), max(ends))

    def summary(self) -> dict[str, Any]:
        h = self.total
        return {
            "rps": round(self.rps, 1),
            "p50_ms": _ms(h.quantile(0.50)),
            "p95_ms": _ms(h.quantile(0.95)),
            "p99_ms": _ms(h.quantile(0.99)),
            "p999_ms": _ms(h.quantile(0.999)),
            "max_ms": _ms(h.max_ms if h.count else None),
            "errors": h.errors,
            "requests": h.count + h.errors,
        }


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 3)
