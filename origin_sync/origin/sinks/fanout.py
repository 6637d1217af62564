"""Several sinks as one, and `open_sink`, which builds the configured ones."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from origin_sync.origin.sinks.base import EventSink
from origin_sync.origin.sinks.nats import NatsEventSink
from origin_sync.origin.sinks.sql import PostgresEventSink, SQLiteEventSink


class FanoutSink(EventSink):
    """Several sinks; NATS first (idempotent by message id), the SQL ledger last, so a crash in between is retried
    without a duplicate anywhere."""

    def __init__(self, sinks: list[EventSink]) -> None:
        self.sinks = sorted(sinks, key=lambda s: s.queryable)
        self.queryable = any(s.queryable for s in sinks)
        self.name = "+".join(s.name for s in self.sinks)
        self._sql = next((s for s in sinks if s.queryable), None)

    async def open(self) -> None:
        for sink in self.sinks:
            await sink.open()

    async def close(self) -> None:
        for sink in self.sinks:
            await sink.close()

    async def write_batch(self, batch_key: str, events: list[dict[str, Any]]) -> bool:
        fresh = True
        for sink in self.sinks:
            fresh = await sink.write_batch(batch_key, events) and fresh
        return fresh

    def _queryable(self) -> EventSink:
        if self._sql is None:
            raise NotImplementedError("no SQL event sink configured (EDGEREC_EVENT_SINK has no sql)")
        return self._sql

    async def erase(self, shopper: str) -> int:
        return await self._queryable().erase(shopper)

    async def events_of(self, shopper: str) -> list[dict[str, Any]]:
        return await self._queryable().events_of(shopper)

    async def purge_before(self, ts: float) -> int:
        return await self._sql.purge_before(ts) if self._sql is not None else 0

    async def experiment_counts(self, experiment: dict[str, Any]) -> dict[str, Any]:
        return await self._queryable().experiment_counts(experiment)

    async def write_health(self, batch_key: str, rows: list[dict[str, Any]]) -> None:
        if self._sql is not None:
            await self._sql.write_health(batch_key, rows)

    async def read_events(self, after: tuple[float, str] | None, limit: int) -> list[dict[str, Any]]:
        return await self._queryable().read_events(after, limit)

    async def stored_impressions(self, request_ids: list[str]) -> set[str]:
        return await self._queryable().stored_impressions(request_ids)

    async def count(self) -> int:
        return await self._queryable().count()


def open_sink(
    kinds: tuple[str, ...], dsn: str | None, events_db: Path | str, nats_url: str, schema: str | None = None
) -> EventSink:
    """The configured sinks: "sql" (PostgreSQL when a DSN is given, else the SQLite file) and/or "nats"."""
    sinks: list[EventSink] = []
    for kind in kinds:
        if kind == "sql":
            sinks.append(PostgresEventSink(dsn, schema) if dsn else SQLiteEventSink(events_db))
        elif kind == "nats":
            sinks.append(NatsEventSink(nats_url))
        else:
            raise ValueError(f"unknown event sink {kind!r}")
    return FanoutSink(sinks)
