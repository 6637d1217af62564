"""The SQL event sink, one code path on either engine: SQLite (its own file, so that ingest never waits on the
change log's lock) or PostgreSQL (the store's database and schema, through its own pool).

Exactly once: a batch's key goes into the `event_batches` ledger in the same transaction as its events, so a
retried batch is acknowledged without being stored twice; and a feedback event's id is stored once (a unique index),
so a client's retry of an event (the same event_id, hence the same id), kept by two edges or twice by one, is one row.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from origin_sync.origin.sinks.base import EventSink
from origin_sync.origin.sinks.reports import COUNTS_KEYS, COUNTS_SQL, REVENUE_KEYS, REVENUE_SQL, unattributed_sql
from origin_sync.origin.store.dialect import Connection, Engine, PostgresEngine, SQLiteEngine

COLUMNS = (
    "id",
    "kind",
    "ts",
    "region",
    "request_id",
    "shopper",
    "experiment",
    "variant",
    "offer_ids",
    "value",
    "currency",
    "model_version",
    "data_version",
    "slot",
)
INSERT_FEEDBACK = (
    f"INSERT INTO events({', '.join(COLUMNS)}) VALUES ({', '.join(f'${i}' for i in range(1, len(COLUMNS) + 1))}) "
    "ON CONFLICT DO NOTHING"
)
# Impressions (an edge's own, one per answer, id = its request_id) are never retried by a client: they stay out of
# the index, which so costs nothing on the bulk of the rows, and keep the bulk copy.
FEEDBACK_ID_INDEX = "events_feedback_id"
_FEEDBACK_ID_SQL = f"CREATE UNIQUE INDEX {FEEDBACK_ID_INDEX} ON events (id) WHERE kind <> 'impression'"
_SCHEMA_LOCK = 0x6564676572656332  # the advisory lock taken while creating the tables: "edgerec2"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS event_batches (
    batch_key   TEXT PRIMARY KEY,
    events      INTEGER NOT NULL,
    received_at {real} NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    id            TEXT NOT NULL,
    kind          TEXT NOT NULL,
    ts            {real} NOT NULL,
    region        TEXT NOT NULL,
    request_id    TEXT NOT NULL,
    shopper       TEXT,
    experiment    TEXT,
    variant       TEXT,
    offer_ids     TEXT NOT NULL,
    value         {real},
    currency      TEXT,
    model_version TEXT,
    data_version  BIGINT,
    slot          TEXT
);
CREATE INDEX IF NOT EXISTS events_request ON events (request_id);
CREATE INDEX IF NOT EXISTS events_experiment ON events (experiment, kind);
CREATE INDEX IF NOT EXISTS events_shopper ON events (shopper);
CREATE INDEX IF NOT EXISTS events_ts ON events (ts);
CREATE INDEX IF NOT EXISTS event_batches_received ON event_batches (received_at);
CREATE TABLE IF NOT EXISTS variant_health (
    batch_key     TEXT NOT NULL,
    received_at   {real} NOT NULL,
    experiment    TEXT,
    variant       TEXT,
    region        TEXT NOT NULL,
    model_version TEXT NOT NULL,
    answers       BIGINT NOT NULL,
    fallbacks     BIGINT NOT NULL,
    errors        BIGINT NOT NULL,
    model_ms      TEXT NOT NULL  -- JSON list: counts per bucket of wire.health.MODEL_MS_BOUNDS, then beyond
);
CREATE INDEX IF NOT EXISTS variant_health_experiment ON variant_health (experiment)
"""
log = logging.getLogger("edgerec.origin.events")
HEALTH_COLUMNS = (
    "batch_key",
    "received_at",
    "experiment",
    "variant",
    "region",
    "model_version",
    "answers",
    "fallbacks",
    "errors",
    "model_ms",
)


def _row(event: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(json.dumps(event[c]) if c == "offer_ids" else event[c] for c in COLUMNS)


async def read_events_page(conn: Connection, after: tuple[float, str] | None, limit: int) -> list[dict[str, Any]]:
    """Events in (ts, id) order after the key `after`, `offer_ids` decoded."""
    columns = ", ".join(COLUMNS)
    if after is None:
        rows = await conn.fetch(f"SELECT {columns} FROM events ORDER BY ts, id LIMIT $1", limit)  # nosec B608
    else:
        rows = await conn.fetch(
            f"SELECT {columns} FROM events WHERE ts > $1 OR (ts = $1 AND id > $2) "  # nosec B608 - constant SQL
            "ORDER BY ts, id LIMIT $3",
            after[0],
            after[1],
            limit,
        )
    events = [dict(zip(COLUMNS, tuple(r))) for r in rows]
    for event in events:
        event["offer_ids"] = json.loads(event["offer_ids"])
    return events


async def _create(conn: Connection) -> None:
    await conn.lock(_SCHEMA_LOCK)  # several origins may start at once
    for statement in _SCHEMA.format(**conn.types).split(";"):
        if statement.strip():
            await conn.execute(statement)
    if not await conn.has_index(FEEDBACK_ID_INDEX):
        await _index_feedback_ids(conn)


async def _index_feedback_ids(conn: Connection) -> None:
    """The migration of a database from before the unique index: keep the first (by ts) of each feedback id stored
    more than once (the duplicates a retry made then), then build the index. It locks the table while it builds,
    once, at the first start of an origin of this version."""
    duplicated = await conn.fetch(
        "SELECT id FROM events WHERE kind <> 'impression' GROUP BY id HAVING COUNT(*) > 1"  # nosec B608
    )
    columns = ", ".join(COLUMNS)
    for (event_id,) in (tuple(r) for r in duplicated):
        first = await conn.fetchrow(
            f"SELECT {columns} FROM events WHERE id = $1 AND kind <> 'impression' ORDER BY ts LIMIT 1",  # nosec B608
            event_id,
        )
        removed = await conn.execute("DELETE FROM events WHERE id = $1 AND kind <> 'impression'", event_id)
        await conn.execute(INSERT_FEEDBACK, *tuple(first))
        log.warning("events: feedback id stored %d times, kept once before indexing ids", removed)
    await conn.execute(_FEEDBACK_ID_SQL)


class SQLEventSink(EventSink):
    """Events and the batch ledger in two tables of an engine's database."""

    queryable = True

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def open(self) -> None:
        await self.engine.open()
        await self.engine.transaction(_create, write=True)

    async def close(self) -> None:
        await self.engine.close()

    async def write_batch(self, batch_key: str, events: list[dict[str, Any]]) -> bool:
        async def write(conn: Connection) -> bool:
            fresh = await conn.fetchval(
                "INSERT INTO event_batches(batch_key, events, received_at) VALUES ($1, $2, $3) "
                "ON CONFLICT (batch_key) DO NOTHING RETURNING 1",
                batch_key,
                len(events),
                time.time(),
            )
            if fresh is None:
                return False
            impressions = [_row(e) for e in events if e["kind"] == "impression"]
            feedback = [_row(e) for e in events if e["kind"] != "impression"]
            if impressions:
                await conn.copy_rows("events", COLUMNS, impressions)
            if feedback:  # an id stored before (a client's retry through another batch) adds nothing
                await conn.executemany(INSERT_FEEDBACK, feedback)
            return True

        return await self.engine.transaction(write, write=True)

    async def write_health(self, batch_key: str, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        now = time.time()
        values = [(batch_key, now, *(r[c] for c in HEALTH_COLUMNS[2:-1]), json.dumps(r["model_ms"])) for r in rows]

        async def write(conn: Connection) -> None:
            await conn.copy_rows("variant_health", HEALTH_COLUMNS, values)

        await self.engine.transaction(write, write=True)

    async def erase(self, shopper: str) -> int:
        async def erase(conn: Connection) -> int:
            return await conn.execute("DELETE FROM events WHERE shopper = $1", shopper)

        return await self.engine.run(erase)

    async def events_of(self, shopper: str) -> list[dict[str, Any]]:
        async def query(conn: Connection) -> list[dict[str, Any]]:
            rows = await conn.fetch(
                f"SELECT {', '.join(COLUMNS)} FROM events WHERE shopper = $1 ORDER BY ts, id",  # nosec B608
                shopper,
            )
            return [{c: json.loads(v) if c == "offer_ids" else v for c, v in zip(COLUMNS, tuple(r))} for r in rows]

        return await self.engine.run(query)

    async def purge_before(self, ts: float) -> int:
        async def purge(conn: Connection) -> int:
            await conn.execute("DELETE FROM event_batches WHERE received_at < $1", ts)
            await conn.execute("DELETE FROM variant_health WHERE received_at < $1", ts)
            return await conn.execute("DELETE FROM events WHERE ts < $1", ts)

        return await self.engine.run(purge)

    async def experiment_counts(self, experiment: dict[str, Any]) -> dict[str, Any]:
        unattributed, unattributed_args = unattributed_sql(experiment)

        async def query(conn: Connection) -> dict[str, Any]:
            counts = await conn.fetch(COUNTS_SQL, experiment["id"])
            revenue = await conn.fetch(REVENUE_SQL, experiment["id"])
            feedback = await conn.fetch(unattributed, *unattributed_args)
            health: dict[str, dict[str, Any]] = {}
            for r in await conn.fetch(
                "SELECT variant, answers, fallbacks, errors, model_ms FROM variant_health WHERE experiment = $1",
                experiment["id"],
            ):
                cell = health.setdefault(r[0], {"answers": 0, "fallbacks": 0, "errors": 0, "model_ms": []})
                for key, value in zip(("answers", "fallbacks", "errors"), tuple(r)[1:4]):
                    cell[key] += int(value)
                buckets = json.loads(r[4])
                cell["model_ms"] = [a + b for a, b in zip(cell["model_ms"] or [0] * len(buckets), buckets)]
            return {
                "health": health,
                "variants": [dict(zip(COUNTS_KEYS, tuple(r))) for r in counts],
                "revenue": [dict(zip(REVENUE_KEYS, tuple(r))) for r in revenue],
                "unattributed": {r[0]: int(r[1]) for r in feedback},
            }

        # One read transaction, so that the three figures describe the same events.
        return await self.engine.transaction(query, write=False)

    async def read_events(self, after: tuple[float, str] | None, limit: int) -> list[dict[str, Any]]:
        return await self.engine.run(lambda conn: read_events_page(conn, after, limit))

    async def stored_impressions(self, request_ids: list[str]) -> set[str]:
        if not request_ids:
            return set()

        async def query(conn: Connection) -> set[str]:
            rows = await conn.fetch(
                "SELECT DISTINCT request_id FROM events WHERE kind = 'impression' AND "  # nosec B608 - constant SQL
                f"{conn.is_in('request_id', 1)}",
                conn.text_list(request_ids),
            )
            return {r[0] for r in rows}

        return await self.engine.run(query)

    async def count(self) -> int:
        async def count(conn: Connection) -> int:
            return int(await conn.fetchval("SELECT COUNT(*) FROM events"))

        return await self.engine.run(count)


class SQLiteEventSink(SQLEventSink):
    """Events in their own SQLite file (WAL), ready once constructed."""

    name = "sqlite"

    def __init__(self, path: Path | str) -> None:
        engine = SQLiteEngine(path)
        super().__init__(engine)
        engine.transaction_now(_create, write=True)

    async def open(self) -> None:
        pass


class PostgresEventSink(SQLEventSink):
    """Events in the origin's PostgreSQL database (the store's schema), through their own connection pool."""

    name = "postgresql"

    def __init__(self, dsn: str, schema: str | None = None) -> None:
        self.dsn, self.schema = dsn, schema
        super().__init__(PostgresEngine(dsn, schema, min_size=1, max_size=4))
