"""`EventSink`: what the origin needs to ingest the events edges ship; the SQL sinks also answer reports, erasure
and retention."""

from __future__ import annotations

import abc
from typing import Any


class EventSink(abc.ABC):
    """Where a batch of events goes. Exactly once: a sink stores a batch key's events at most once."""

    name = "sink"
    queryable = False

    async def open(self) -> None:  # noqa: B027 - optional hook
        pass

    async def close(self) -> None:  # noqa: B027 - optional hook
        pass

    @abc.abstractmethod
    async def write_batch(self, batch_key: str, events: list[dict[str, Any]]) -> bool:
        """Store a batch; False when this batch key was stored before (nothing is stored twice)."""

    async def write_health(self, batch_key: str, rows: list[dict[str, Any]]) -> None:  # noqa: B027 - optional
        """Store the health counters a fresh batch carried (wire/health.py); sinks that answer no reports drop them."""

    async def erase(self, shopper: str) -> int:
        raise NotImplementedError(f"the {self.name} sink cannot erase")

    async def events_of(self, shopper: str) -> list[dict[str, Any]]:
        """Every stored event of one shopper (pseudonym), oldest first: what an export of their data shows."""
        raise NotImplementedError(f"the {self.name} sink cannot look events up")

    async def purge_before(self, ts: float) -> int:
        return 0

    async def experiment_counts(self, experiment: dict[str, Any]) -> dict[str, Any]:
        """What an experiment's report is computed from (see analysis.build_report): {"variants": rows of
        COUNTS_KEYS, "revenue": rows of REVENUE_KEYS, "unattributed": {kind: feedback events in the experiment's
        scope whose request_id matches no stored impression}} (see reports.py)."""
        raise NotImplementedError(f"the {self.name} sink cannot answer reports")

    async def read_events(self, after: tuple[float, str] | None, limit: int) -> list[dict[str, Any]]:
        """Up to `limit` stored events in (ts, id) order after the key `after` (None: from the first): the pages
        that training from the origin's own events reads (models/events.py)."""
        raise NotImplementedError(f"the {self.name} sink cannot export events")

    async def stored_impressions(self, request_ids: list[str]) -> set[str]:
        """Those of `request_ids` that some stored impression carries."""
        raise NotImplementedError(f"the {self.name} sink cannot look events up")

    async def count(self) -> int:
        raise NotImplementedError
