"""The origin's event sinks against the real engines: SQLite, PostgreSQL (own schema per test) and NATS
JetStream at 127.0.0.1:4222 (a stream per event kind)."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from typing import TYPE_CHECKING, AsyncIterator

import orjson
import pytest

from origin_sync.origin.sinks import (
    FanoutSink,
    NatsEventSink,
    PostgresEventSink,
    SQLiteEventSink,
    unattributed_feedback,
    unresolved_request_ids,
)
from origin_sync.origin.sinks.sql import FEEDBACK_ID_INDEX
from origin_sync.origin.store.dialect import Connection
from origin_sync.wire.events import KINDS, feedback_event_id
from tests.conftest import NATS_URL, PG_DSN, needs_nats, needs_pg

if TYPE_CHECKING:
    from nats.js import JetStreamContext


def events(n: int, experiment: str = "e", shopper: str | None = None, prefix: str = "") -> list[dict]:
    """n impressions, and a purchase after every fourth; `prefix` makes their ids another batch's (an id is one
    event: a sink stores a feedback id once)."""
    out = []
    for i in range(n):
        request_id = f"{prefix}r{i}"
        out.append(
            {
                "id": request_id,
                "kind": "impression",
                "ts": time.time(),
                "region": "GB",
                "request_id": request_id,
                "shopper": shopper,
                "experiment": experiment,
                "variant": "a" if i % 2 else "b",
                "offer_ids": ["GB-1", "GB-2"],
                "value": None,
                "currency": None,
                "model_version": "m",
                "data_version": 3,
                "slot": None,
            }
        )
        if i % 4 == 0:
            out.append(
                {
                    **out[-1],
                    "id": f"{prefix}p{i}",
                    "kind": "purchase",
                    "value": 10.0,
                    "currency": "GBP",
                    "offer_ids": ["GB-1"],
                }
            )
    return out


async def _exercise(sink) -> None:
    await sink.open()
    try:
        batch = events(40, shopper="abc")
        assert await sink.write_batch("GB/b1", batch) is True
        assert await sink.write_batch("GB/b1", batch) is False  # a retry: acknowledged, not stored again
        assert await sink.count() == len(batch)
        report = await sink.experiment_counts({"id": "e", "regions": [], "start": None, "end": None})
        counts = {c["variant"]: c for c in report["variants"]}
        assert counts["b"]["impressions"] == 20 and counts["b"]["converted"] == 10 and counts["a"]["converted"] == 0
        assert report["revenue"] == [
            {
                "variant": "b",
                "region": "GB",
                "currency": "GBP",
                "purchases": 10,
                "revenue": pytest.approx(100.0),
                "revenue_sq": pytest.approx(1000.0),
            }
        ]
        assert report["unattributed"] == {}
        other = events(3, shopper="other", prefix="o")
        assert await sink.write_batch("GB/b2", other) is True
        assert await sink.erase("abc") == len(batch)
        assert await sink.count() == len(other)
        assert await sink.purge_before(time.time() + 1) == len(other)
    finally:
        await sink.close()


def event(kind: str, request_id: str, region: str = "GB", ts: float = 1000.0, **fields) -> dict:
    return {
        "id": secrets.token_hex(6),
        "kind": kind,
        "ts": ts,
        "region": region,
        "request_id": request_id,
        "shopper": None,
        "experiment": None,
        "variant": None,
        "offer_ids": ["x"],
        "value": None,
        "currency": None,
        "model_version": None,
        "data_version": None,
        "slot": None,
        **fields,
    }


async def _report_counts(sink) -> None:
    """Revenue per (variant, region, currency), never summed across currencies; feedback without an impression
    counted in the scope (regions and window) of the experiment; impressions looked up by request id."""
    await sink.open()
    try:
        batch = [
            event("impression", "gb-1", experiment="x", variant="a"),
            event("impression", "gb-2", experiment="x", variant="b"),
            event("impression", "de-1", region="DE", experiment="x", variant="b"),
            event("purchase", "gb-1", value=10.0, currency="GBP"),
            event("purchase", "gb-1", value=5.0, currency="GBP"),  # one impression, two purchases: 15
            event("purchase", "de-1", region="DE", value=20.0, currency="EUR"),
            event("purchase", "de-1", region="DE", value=2.0),  # no currency: kept apart
            event("click", "gb-2"),
            # Feedback no impression explains: in scope (GB or DE, inside the window) or not.
            event("click", "nowhere-1"),
            event("purchase", "nowhere-2", value=3.0, currency="GBP"),
            event("add_to_cart", "nowhere-3", region="DE"),
            event("click", "nowhere-4", region="FR"),  # another region
            event("click", "nowhere-5", ts=5000.0),  # after the end
            event("click", "nowhere-6", ts=10.0),
        ]  # before the start
        assert await sink.write_batch("GB,DE/b1", batch) is True
        experiment = {"id": "x", "regions": ["DE", "GB"], "start": 100.0, "end": 2000.0}
        counts = await sink.experiment_counts(experiment)
        assert sorted(
            (r["variant"], r["region"], r["impressions"], r["clicked"], r["converted"]) for r in counts["variants"]
        ) == [("a", "GB", 1, 1, 1), ("b", "DE", 1, 1, 1), ("b", "GB", 1, 1, 0)]
        revenue = sorted(counts["revenue"], key=lambda r: (r["variant"], r["region"], r["currency"] or ""))
        assert [
            (r["variant"], r["region"], r["currency"], r["purchases"], r["revenue"], r["revenue_sq"]) for r in revenue
        ] == [("a", "GB", "GBP", 1, 15.0, 225.0), ("b", "DE", None, 1, 2.0, 4.0), ("b", "DE", "EUR", 1, 20.0, 400.0)]
        assert counts["unattributed"] == {"click": 1, "purchase": 1, "add_to_cart": 1}
        everywhere = await sink.experiment_counts({"id": "x", "regions": [], "start": None, "end": None})
        assert everywhere["unattributed"] == {"click": 4, "purchase": 1, "add_to_cart": 1}
        assert await sink.stored_impressions(["gb-1", "nowhere-1", "de-1"]) == {"gb-1", "de-1"}
        assert await sink.stored_impressions([f"r{i}" for i in range(1200)]) == set()  # over SQLite's bound limit
        assert await sink.stored_impressions([]) == set()
    finally:
        await sink.close()


def test_the_sqlite_sink_stores_each_batch_once_and_answers_reports_and_erasure(tmp_path):
    asyncio.run(_exercise(SQLiteEventSink(tmp_path / "events.db")))


def test_the_sqlite_sink_reports_revenue_per_currency_and_unattributed_feedback(tmp_path):
    asyncio.run(_report_counts(SQLiteEventSink(tmp_path / "events.db")))


@needs_pg
def test_the_postgresql_sink_reports_revenue_per_currency_and_unattributed_feedback(pg_schema):
    asyncio.run(_report_counts(PostgresEventSink(PG_DSN, pg_schema.name)))


def test_a_batch_s_feedback_is_unattributed_only_without_an_impression_in_it_or_stored():
    batch = [
        event("impression", "r1"),
        event("click", "r1"),
        event("click", "r2"),
        event("purchase", "r3"),
        event("purchase", "r4"),
        event("add_to_cart", "r4"),
    ]
    assert unresolved_request_ids(batch) == ["r2", "r3", "r4"]
    assert unattributed_feedback(batch, known={"r3"}) == {"click": 1, "purchase": 1, "add_to_cart": 1}


@needs_pg
def test_the_postgresql_sink_stores_each_batch_once_and_answers_reports_and_erasure(pg_schema):
    asyncio.run(_exercise(PostgresEventSink(PG_DSN, pg_schema.name)))


def _nats_sink() -> NatsEventSink:
    """A NATS sink on subjects and streams of this test's own."""
    prefix = f"edgerec_t_{secrets.token_hex(4)}"
    return NatsEventSink(NATS_URL, subject_prefix=f"{prefix}.events", stream_prefix=prefix.upper())


@contextlib.asynccontextmanager
async def _opened_with_jetstream(sink, nats_sink: NatsEventSink) -> AsyncIterator[JetStreamContext]:
    """`sink` (which writes through `nats_sink`) opened, and a JetStream client; after it the test's streams are
    deleted and both closed."""
    import nats

    await sink.open()
    nc = await nats.connect(NATS_URL)
    js = nc.jetstream()
    try:
        yield js
    finally:
        for kind in KINDS:
            try:
                await js.delete_stream(nats_sink.stream(kind))
            except Exception:  # noqa: BLE001 - cleanup only
                pass
        await nc.close()
        await sink.close()


@needs_nats
def test_a_nats_jetstream_round_trip_with_a_stream_per_kind_and_no_duplicates(tmp_path):
    async def run() -> None:
        nats_sink = _nats_sink()
        sink = FanoutSink([SQLiteEventSink(tmp_path / "events.db"), nats_sink])
        async with _opened_with_jetstream(sink, nats_sink) as js:
            batch = events(10)
            assert await sink.write_batch("GB/b1", batch) is True
            assert await sink.write_batch("GB/b1", batch) is False  # retried: JetStream drops the same msg ids
            impressions = await js.stream_info(nats_sink.stream("impression"))
            purchases = await js.stream_info(nats_sink.stream("purchase"))
            assert impressions.state.messages == 10 and purchases.state.messages == 3
            subscription = await js.pull_subscribe(
                nats_sink.subject("purchase"), durable=None, stream=nats_sink.stream("purchase")
            )
            received = [orjson.loads(m.data) for m in await subscription.fetch(3, timeout=5)]
            assert sorted(e["id"] for e in received) == ["p0", "p4", "p8"] and received[0]["value"] == 10.0

    asyncio.run(run())


def _retried_event_batches() -> tuple[list[dict], list[dict]]:
    """Two edges' batches: the first edge kept a click and a purchase (their 202 lost); the client retried both on
    the second (same event_id, so the same id) which also kept the purchase twice (retried there as well)."""
    click = event("click", "ans-1", id=feedback_event_id("ans-1", "k1"))
    purchase = event("purchase", "ans-1", id=feedback_event_id("ans-1", "k2"), value=4.0, currency="GBP")
    first = [event("impression", "ans-1"), click, purchase, event("click", "ans-1")]  # the last: no event_id
    second = [event("impression", "ans-2"), {**click, "ts": 1001.0}, purchase, purchase]
    return first, second


async def _stores_each_event_id_once(sink) -> None:
    await sink.open()
    try:
        first, second = _retried_event_batches()
        assert await sink.write_batch("GB/edge-a-1", first) is True
        assert await sink.write_batch("GB/edge-b-1", second) is True
        stored = await sink.read_events(None, 100)
        assert sorted(e["kind"] for e in stored) == ["click", "click", "impression", "impression", "purchase"]
        assert {e["id"] for e in stored if e["kind"] != "impression"} == {e["id"] for e in first[1:]}
        assert [e["ts"] for e in stored if e["id"] == first[1]["id"]] == [1000.0]  # the first copy stays
        counts = await sink.experiment_counts({"id": "none", "regions": [], "start": None, "end": None})
        assert counts["unattributed"] == {}  # the purchase is one feedback event, attributed to ans-1
    finally:
        await sink.close()


def test_the_sqlite_sink_stores_a_retried_event_once_across_batches_and_edges(tmp_path):
    asyncio.run(_stores_each_event_id_once(SQLiteEventSink(tmp_path / "events.db")))


@needs_pg
def test_the_postgresql_sink_stores_a_retried_event_once_across_batches_and_edges(pg_schema):
    asyncio.run(_stores_each_event_id_once(PostgresEventSink(PG_DSN, pg_schema.name)))


async def _migrates_a_database_from_before_the_index(make_sink) -> None:
    """An events table of an older origin (no unique index, a feedback event stored twice by a retry through two
    edges): the next origin keeps one of each id, builds the index, and stores no duplicate from then on."""
    sink = make_sink()
    await sink.open()
    first, second = _retried_event_batches()

    async def age(conn: Connection) -> None:
        await conn.execute(f"DROP INDEX {FEEDBACK_ID_INDEX}")

    await sink.engine.transaction(age, write=True)
    await sink.write_batch("GB/old-a", first)
    await sink.write_batch("GB/old-b", second)
    assert await sink.count() == len(first) + len(second)
    await sink.close()

    sink = make_sink()
    await sink.open()
    try:
        assert await sink.engine.run(lambda conn: conn.has_index(FEEDBACK_ID_INDEX)) is True
        assert await sink.count() == 5  # two impressions, and the click, the purchase and the click without a key
        clicks = [e for e in await sink.read_events(None, 100) if e["id"] == first[1]["id"]]
        assert [e["ts"] for e in clicks] == [1000.0]
        assert await sink.write_batch("GB/new-b", [second[1]]) is True
        assert await sink.count() == 5
    finally:
        await sink.close()


def test_an_older_sqlite_events_database_is_deduplicated_and_indexed_at_start(tmp_path):
    asyncio.run(_migrates_a_database_from_before_the_index(lambda: SQLiteEventSink(tmp_path / "events.db")))


@needs_pg
def test_an_older_postgresql_events_table_is_deduplicated_and_indexed_at_start(pg_schema):
    asyncio.run(_migrates_a_database_from_before_the_index(lambda: PostgresEventSink(PG_DSN, pg_schema.name)))


@needs_nats
def test_the_nats_sink_stores_a_retried_event_once_across_batches_and_edges():
    async def run() -> None:
        sink = _nats_sink()
        async with _opened_with_jetstream(sink, sink) as js:
            info = await js.stream_info(sink.stream("click"))
            assert info.config.duplicate_window == 2 * 3600
            first, second = _retried_event_batches()
            assert await sink.write_batch("GB/edge-a-1", first) is True
            assert await sink.write_batch("GB/edge-b-1", second) is True
            counts = {kind: (await js.stream_info(sink.stream(kind))).state.messages for kind in KINDS}
            assert counts == {"impression": 2, "click": 2, "add_to_cart": 0, "purchase": 1}

    asyncio.run(run())
