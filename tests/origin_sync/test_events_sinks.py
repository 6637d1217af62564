"""The origin's event sinks against the real engines: SQLite, PostgreSQL (own schema per test) and NATS
JetStream at 127.0.0.1:4222 (a stream per event kind)."""

from __future__ import annotations

import asyncio
import secrets
import time

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
from origin_sync.wire.events import KINDS
from tests.conftest import NATS_URL, PG_DSN, needs_nats, needs_pg


def events(n: int, experiment: str = "e", shopper: str | None = None) -> list[dict]:
    out = []
    for i in range(n):
        request_id = f"r{i}"
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
                {**out[-1], "id": f"p{i}", "kind": "purchase", "value": 10.0, "currency": "GBP", "offer_ids": ["GB-1"]}
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
        other = events(3, shopper="other")
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


@needs_nats
def test_a_nats_jetstream_round_trip_with_a_stream_per_kind_and_no_duplicates(tmp_path):
    prefix = f"edgerec_t_{secrets.token_hex(4)}"

    async def run() -> None:
        import nats

        nats_sink = NatsEventSink(NATS_URL, subject_prefix=f"{prefix}.events", stream_prefix=prefix.upper())
        sink = FanoutSink([SQLiteEventSink(tmp_path / "events.db"), nats_sink])
        await sink.open()
        nc = await nats.connect(NATS_URL)
        js = nc.jetstream()
        try:
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
        finally:
            for kind in KINDS:
                try:
                    await js.delete_stream(nats_sink.stream(kind))
                except Exception:  # noqa: BLE001 - cleanup only
                    pass
            await nc.close()
            await sink.close()

    asyncio.run(run())
