"""Prometheus metrics of a profile store, read from its counters at scrape time (the store counts; this reports)."""

from __future__ import annotations

from typing import Any, Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric


class ProfileCollector:
    """`edgerec_profiles_*`: held profiles and bytes with the budget (embedded), lookups by result (hit rate =
    hit / (hit + miss)), evictions, expirations, erasures, corrupt records and files, write failures, Redis
    timeouts and errors."""

    def __init__(self, store: Any) -> None:
        self.store = store  # an EmbeddedProfileStore or a RedisProfileStore

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        stats = self.store.stats
        held = self.store.held()
        if held is not None:
            yield GaugeMetricFamily("edgerec_profiles_held", "Profiles held in memory", value=held[0])
            yield GaugeMetricFamily(
                "edgerec_profiles_bytes", "Bytes of the profiles held in memory (encoded record + key)", value=held[1]
            )
            yield GaugeMetricFamily(
                "edgerec_profiles_budget_bytes", "Memory budget of the profile store", value=self.store.budget_bytes
            )
        yield _by_label(
            "edgerec_profiles_lookups", "Profile reads by result", "result", hit=stats.hits, miss=stats.misses
        )
        yield CounterMetricFamily(
            "edgerec_profiles_evictions",
            "Profiles moved out of memory for the budget (still on disk)",
            value=stats.evictions,
        )
        yield CounterMetricFamily("edgerec_profiles_expired", "Profiles dropped for retention", value=stats.expired)
        yield CounterMetricFamily("edgerec_profiles_erased", "Profiles erased", value=stats.erased)
        yield _by_label(
            "edgerec_profiles_corrupt",
            "Stored profiles refused (undecryptable or undecodable records; whole files moved aside)",
            "what",
            record=stats.corrupt_records,
            file=stats.corrupt_files,
        )
        yield CounterMetricFamily(
            "edgerec_profiles_write_failures",
            "Profile updates not stored (disk error, Redis down)",
            value=stats.write_failures,
        )
        yield _by_label(
            "edgerec_profiles_redis_failures",
            "Redis reads answered as misses, by reason",
            "reason",
            timeout=stats.redis_timeouts,
            error=stats.redis_errors,
        )


def _by_label(name: str, documentation: str, label: str, **counts: float) -> CounterMetricFamily:
    """A counter with one sample per value of its one label."""
    family = CounterMetricFamily(name, documentation, labels=[label])
    for value, count in counts.items():
        family.add_metric([value], count)
    return family


def register_profile_metrics(registry: CollectorRegistry, store: Any) -> ProfileCollector:
    collector = ProfileCollector(store)
    registry.register(collector)
    return collector
