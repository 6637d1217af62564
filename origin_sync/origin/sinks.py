"""Where the origin puts the events edges ship: one `EventSink` interface; SQLite (embedded default),
PostgreSQL (the store's database) and NATS JetStream (a stream per event kind), alone or fanned out.

Exactly once: an edge's batch id is recorded in the SQL sink's ledger in the same transaction as its events, so a
retried batch is acknowledged without being stored twice; NATS messages carry `Nats-Msg-Id` (the event id) and
the streams deduplicate within their window.
"""

from __future__ import annotations

import abc
import asyncio
import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Callable, TypeVar

import orjson

from origin_sync.wire.events import FEEDBACK_KINDS, KIND_IMPRESSION, KINDS

T = TypeVar("T")
_COLUMNS = ("id", "kind", "ts", "region", "request_id", "shopper", "experiment", "variant", "offer_ids", "value",
            "currency", "model_version", "data_version", "slot")


def _row(event: dict[str, Any]) -> tuple:
    return tuple(json.dumps(event[c]) if c == "offer_ids" else event[c] for c in _COLUMNS)


class EventSink(abc.ABC):
    """What the origin needs to ingest events. SQL sinks also answer reports, erasure and retention."""

    name = "sink"
    queryable = False

    async def open(self) -> None:  # noqa: B027 - optional hook
        pass

    async def close(self) -> None:  # noqa: B027 - optional hook
        pass

    @abc.abstractmethod
    async def write_batch(self, batch_key: str, events: list[dict[str, Any]]) -> bool:
        """Store a batch; False when this batch key was stored before (nothing is stored twice)."""

    async def erase(self, shopper: str) -> int:
        raise NotImplementedError(f"the {self.name} sink cannot erase")

    async def purge_before(self, ts: float) -> int:
        return 0

    async def experiment_counts(self, experiment: dict[str, Any]) -> dict[str, Any]:
        """What an experiment's report is computed from (see analysis.build_report): {"variants": rows of
        _COUNTS_KEYS, "revenue": rows of _REVENUE_KEYS, "unattributed": {kind: feedback events in the experiment's
        scope whose request_id matches no stored impression}}."""
        raise NotImplementedError(f"the {self.name} sink cannot answer reports")

    async def stored_impressions(self, request_ids: list[str]) -> set[str]:
        """Those of `request_ids` that some stored impression carries."""
        raise NotImplementedError(f"the {self.name} sink cannot look events up")

    async def count(self) -> int:
        raise NotImplementedError


# Per impression (unit of analysis): did it lead to a click, a cart, a purchase. Feedback is attributed to the
# impression through its request_id, so the variant is the one the edge served. Grouped by region as well, so that
# revenue in a currency can be set against the impressions of the regions that pay in it.
_COUNTS_SQL = """
WITH imp AS (
    SELECT request_id, variant, region FROM events WHERE kind = 'impression' AND experiment = {p1}
), act AS (
    SELECT request_id,
           MAX(CASE WHEN kind = 'click' OR kind = 'purchase' THEN 1 ELSE 0 END) AS clicked,
           MAX(CASE WHEN kind = 'add_to_cart' THEN 1 ELSE 0 END) AS carted,
           MAX(CASE WHEN kind = 'purchase' THEN 1 ELSE 0 END) AS purchased
    FROM events WHERE kind <> 'impression' AND request_id IN (SELECT request_id FROM imp)
    GROUP BY request_id
)
SELECT imp.variant, imp.region, COUNT(*), COALESCE(SUM(act.clicked), 0), COALESCE(SUM(act.carted), 0),
       COALESCE(SUM(act.purchased), 0)
FROM imp LEFT JOIN act ON act.request_id = imp.request_id
GROUP BY imp.variant, imp.region ORDER BY imp.variant, imp.region
"""
_COUNTS_KEYS = ("variant", "region", "impressions", "clicked", "carted", "converted")
# Revenue per currency, never summed across currencies: per impression and currency the value of its purchases,
# then per (variant, region, currency) how many impressions had one, their revenue and its sum of squares.
# A purchase without a currency keeps NULL (the report names it apart).
_REVENUE_SQL = """
WITH imp AS (
    SELECT request_id, variant, region FROM events WHERE kind = 'impression' AND experiment = {p1}
), rev AS (
    SELECT request_id, COALESCE(currency, '') AS currency, COALESCE(SUM(value), 0) AS revenue
    FROM events WHERE kind = 'purchase' AND request_id IN (SELECT request_id FROM imp)
    GROUP BY request_id, COALESCE(currency, '')
)
SELECT imp.variant, imp.region, NULLIF(rev.currency, ''), COUNT(*), SUM(rev.revenue), SUM(rev.revenue * rev.revenue)
FROM imp JOIN rev ON rev.request_id = imp.request_id
GROUP BY imp.variant, imp.region, rev.currency ORDER BY imp.variant, imp.region, rev.currency
"""
_REVENUE_KEYS = ("variant", "region", "currency", "purchases", "revenue", "revenue_sq")
_FEEDBACK_SQL = ", ".join(f"'{k}'" for k in FEEDBACK_KINDS)


def _unattributed_sql(experiment: dict[str, Any], placeholder: Callable[[int], str]) -> tuple[str, list[Any]]:
    """Feedback events within an experiment's scope (its regions, every region when it names none, and its time
    window) whose request_id matches no stored impression at all, per kind. Experiments never overlap in region and
    time, so each such event falls in at most one experiment's report."""
    where, args = [f"f.kind IN ({_FEEDBACK_SQL})"], []
    for clause, value in (("f.ts >= {}", experiment.get("start")), ("f.ts < {}", experiment.get("end"))):
        if value is not None:
            args.append(float(value))
            where.append(clause.format(placeholder(len(args))))
    regions = list(experiment.get("regions") or ())
    if regions:
        marks = []
        for region in regions:
            args.append(region)
            marks.append(placeholder(len(args)))
        where.append(f"f.region IN ({', '.join(marks)})")
    sql = (f"SELECT f.kind, COUNT(*) FROM events f WHERE {' AND '.join(where)} AND NOT EXISTS "  # nosec B608 - constant clauses, values bound
           "(SELECT 1 FROM events i WHERE i.request_id = f.request_id AND i.kind = 'impression') GROUP BY f.kind")
    return sql, args


def unattributed_feedback(events: list[dict[str, Any]], known: set[str]) -> dict[str, int]:
    """Per kind, the feedback events of a batch whose request_id is neither an impression of the batch nor in
    `known` (the request ids of stored impressions)."""
    seen = known | {e["request_id"] for e in events if e["kind"] == KIND_IMPRESSION}
    counts: dict[str, int] = {}
    for event in events:
        if event["kind"] in FEEDBACK_KINDS and event["request_id"] not in seen:
            counts[event["kind"]] = counts.get(event["kind"], 0) + 1
    return counts


def unresolved_request_ids(events: list[dict[str, Any]]) -> list[str]:
    """The request ids of a batch's feedback that the batch's own impressions do not explain."""
    own = {e["request_id"] for e in events if e["kind"] == KIND_IMPRESSION}
    return sorted({e["request_id"] for e in events if e["kind"] in FEEDBACK_KINDS and e["request_id"] not in own})


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
CREATE INDEX IF NOT EXISTS event_batches_received ON event_batches (received_at)
"""


class SQLiteEventSink(EventSink):
    """Events in their own SQLite file (WAL), so that ingest never waits on the change log's lock."""

    name = "sqlite"
    queryable = True

    def __init__(self, path: Path | str) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA busy_timeout=10000")
        self._db.executescript(_SCHEMA.format(real="REAL") + ";")
        self._lock = threading.Lock()

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        def locked() -> T:
            with self._lock:
                return fn(*args)
        return await asyncio.to_thread(locked)

    async def close(self) -> None:
        await self._run(self._db.close)

    def _write(self, batch_key: str, events: list[dict[str, Any]]) -> bool:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            cursor = self._db.execute("INSERT OR IGNORE INTO event_batches(batch_key, events, received_at) "
                                      "VALUES (?, ?, ?)", (batch_key, len(events), time.time()))
            fresh = cursor.rowcount == 1
            if fresh:
                self._db.executemany(f"INSERT INTO events({', '.join(_COLUMNS)}) VALUES "  # nosec B608 - constant column names
                                     f"({', '.join('?' * len(_COLUMNS))})", [_row(e) for e in events])
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")
        return fresh

    async def write_batch(self, batch_key: str, events: list[dict[str, Any]]) -> bool:
        return await self._run(self._write, batch_key, events)

    async def erase(self, shopper: str) -> int:
        return await self._run(lambda: self._db.execute("DELETE FROM events WHERE shopper = ?", (shopper,)).rowcount)

    async def purge_before(self, ts: float) -> int:
        def purge() -> int:
            self._db.execute("DELETE FROM event_batches WHERE received_at < ?", (ts,))
            return self._db.execute("DELETE FROM events WHERE ts < ?", (ts,)).rowcount
        return await self._run(purge)

    async def experiment_counts(self, experiment: dict[str, Any]) -> dict[str, Any]:
        unattributed_sql, unattributed_args = _unattributed_sql(experiment, lambda _: "?")

        def query() -> dict[str, Any]:
            # One read transaction, so that the three figures describe the same events.
            self._db.execute("BEGIN")
            try:
                counts = self._db.execute(_COUNTS_SQL.format(p1="?"), (experiment["id"],)).fetchall()
                revenue = self._db.execute(_REVENUE_SQL.format(p1="?"), (experiment["id"],)).fetchall()
                unattributed = self._db.execute(unattributed_sql, unattributed_args).fetchall()
            finally:
                self._db.execute("COMMIT")
            return {"variants": [dict(zip(_COUNTS_KEYS, r)) for r in counts],
                    "revenue": [dict(zip(_REVENUE_KEYS, r)) for r in revenue],
                    "unattributed": {kind: int(n) for kind, n in unattributed}}
        return await self._run(query)

    async def stored_impressions(self, request_ids: list[str]) -> set[str]:
        def query() -> set[str]:
            found: set[str] = set()
            for start in range(0, len(request_ids), 500):  # under SQLite's limit of bound parameters
                chunk = request_ids[start:start + 500]
                found.update(r for (r,) in self._db.execute(
                    f"SELECT DISTINCT request_id FROM events WHERE kind = 'impression' AND request_id IN "  # nosec B608 - placeholders only
                    f"({', '.join('?' * len(chunk))})", chunk))
            return found
        return await self._run(query) if request_ids else set()

    async def count(self) -> int:
        return await self._run(lambda: self._db.execute("SELECT COUNT(*) FROM events").fetchone()[0])


class PostgresEventSink(EventSink):
    """Events in the origin's PostgreSQL database (the store's schema), through their own connection pool."""

    name = "postgresql"
    queryable = True

    def __init__(self, dsn: str, schema: str | None = None) -> None:
        self.dsn, self.schema = dsn, schema
        self._pool: Any = None

    async def open(self) -> None:
        import asyncpg

        settings = {"search_path": self.schema} if self.schema else {}
        self._pool = await asyncpg.create_pool(self.dsn, server_settings=settings, min_size=1, max_size=4)
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", 0x6564676572656332)
            for statement in _SCHEMA.format(real="DOUBLE PRECISION").split(";"):
                if statement.strip():
                    await conn.execute(statement)

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()

    async def write_batch(self, batch_key: str, events: list[dict[str, Any]]) -> bool:
        async with self._pool.acquire() as conn, conn.transaction():
            inserted = await conn.fetchval("INSERT INTO event_batches(batch_key, events, received_at) "
                                           "VALUES ($1, $2, $3) ON CONFLICT (batch_key) DO NOTHING RETURNING 1",
                                           batch_key, len(events), time.time())
            if inserted is None:
                return False
            await conn.copy_records_to_table("events", records=[_row(e) for e in events], columns=_COLUMNS)
            return True

    async def erase(self, shopper: str) -> int:
        result = await self._pool.execute("DELETE FROM events WHERE shopper = $1", shopper)
        return int(result.split()[-1])

    async def purge_before(self, ts: float) -> int:
        async with self._pool.acquire() as conn:
            await conn.execute("DELETE FROM event_batches WHERE received_at < $1", ts)
            result = await conn.execute("DELETE FROM events WHERE ts < $1", ts)
        return int(result.split()[-1])

    async def experiment_counts(self, experiment: dict[str, Any]) -> dict[str, Any]:
        unattributed_sql, unattributed_args = _unattributed_sql(experiment, lambda i: f"${i}")
        async with self._pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            counts = await conn.fetch(_COUNTS_SQL.format(p1="$1"), experiment["id"])
            revenue = await conn.fetch(_REVENUE_SQL.format(p1="$1"), experiment["id"])
            unattributed = await conn.fetch(unattributed_sql, *unattributed_args)
        return {"variants": [dict(zip(_COUNTS_KEYS, tuple(r))) for r in counts],
                "revenue": [dict(zip(_REVENUE_KEYS, tuple(r))) for r in revenue],
                "unattributed": {r[0]: int(r[1]) for r in unattributed}}

    async def stored_impressions(self, request_ids: list[str]) -> set[str]:
        if not request_ids:
            return set()
        rows = await self._pool.fetch("SELECT DISTINCT request_id FROM events WHERE kind = 'impression' AND "
                                      "request_id = ANY($1::text[])", request_ids)
        return {r[0] for r in rows}

    async def count(self) -> int:
        return int(await self._pool.fetchval("SELECT COUNT(*) FROM events"))


class NatsEventSink(EventSink):
    """NATS JetStream: one stream per event kind (`<stream_prefix>_<KIND>`, subject `<subject_prefix>.<kind>`),
    each event a JSON message with `Nats-Msg-Id` = its id, deduplicated by the stream within `duplicate_window_s`."""

    name = "nats"

    def __init__(self, url: str, subject_prefix: str = "edgerec.events", stream_prefix: str = "EDGEREC_EVENTS",
                 duplicate_window_s: float = 2 * 3600) -> None:
        self.url, self.subject_prefix, self.stream_prefix = url, subject_prefix, stream_prefix
        self.duplicate_window_s = duplicate_window_s
        self._nc: Any = None
        self._js: Any = None

    def stream(self, kind: str) -> str:
        return f"{self.stream_prefix}_{kind.upper()}"

    def subject(self, kind: str) -> str:
        return f"{self.subject_prefix}.{kind}"

    async def open(self) -> None:
        import nats
        from nats.js.api import StreamConfig

        self._nc = await nats.connect(self.url, max_reconnect_attempts=-1, connect_timeout=5)
        self._js = self._nc.jetstream()
        for kind in KINDS:
            config = StreamConfig(name=self.stream(kind), subjects=[self.subject(kind)],
                                  duplicate_window=self.duplicate_window_s)
            try:
                await self._js.add_stream(config)
            except Exception:  # noqa: BLE001 - it exists (maybe with other settings): keep it as it is
                await self._js.stream_info(self.stream(kind))

    async def close(self) -> None:
        if self._nc is not None:
            await self._nc.drain()

    async def write_batch(self, batch_key: str, events: list[dict[str, Any]]) -> bool:
        # Publish in windows of concurrent acknowledged publishes; a failure fails the batch, which the edge
        # retries, and the stream drops the messages it already has (same Nats-Msg-Id).
        window = 512
        for start in range(0, len(events), window):
            await asyncio.gather(*(
                self._js.publish(self.subject(e["kind"]), orjson.dumps(e), headers={"Nats-Msg-Id": e["id"]})
                for e in events[start:start + window]))
        return True


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

    async def purge_before(self, ts: float) -> int:
        return await self._sql.purge_before(ts) if self._sql is not None else 0

    async def experiment_counts(self, experiment: dict[str, Any]) -> dict[str, Any]:
        return await self._queryable().experiment_counts(experiment)

    async def stored_impressions(self, request_ids: list[str]) -> set[str]:
        return await self._queryable().stored_impressions(request_ids)

    async def count(self) -> int:
        return await self._queryable().count()


def open_sink(kinds: tuple[str, ...], dsn: str | None, events_db: Path | str, nats_url: str,
              schema: str | None = None) -> EventSink:
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
