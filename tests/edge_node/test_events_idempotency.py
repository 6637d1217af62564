"""Idempotent events through real processes: a `POST /v1/events` retried with the same event_id, on the same edge
or on another replica of the region, is stored once at the origin, on each of its sinks (SQLite, PostgreSQL, NATS
JetStream); events without event_id are stored as often as they are posted, as before; a bad event_id is a 422."""

from __future__ import annotations

import asyncio
import collections
import json
import secrets
import sqlite3
import time
from pathlib import Path
from typing import Callable

import pytest

from edgerec.cli.process import http_call, http_json
from edgerec.cli.services import Cluster
from origin_sync.wire.events import feedback_event_id
from tests.conftest import NATS_DOWN, NATS_URL, PG_DSN, PG_UNREACHABLE, PgSchema, missing_part, wait_until

TAG = f"idem{secrets.token_hex(3)}-"  # this run's request ids: unique across runs, for the shared NATS streams


def sqlite_feedback(path: Path) -> list[tuple[str, str]]:
    """(request_id, id) of every feedback event in the origin's SQLite sink, repeats kept."""
    if not path.exists():
        return []
    with sqlite3.connect(path) as db:
        return db.execute("SELECT request_id, id FROM events WHERE kind != 'impression'").fetchall()


def postgresql_feedback(schema: str) -> list[tuple[str, str]]:
    import asyncpg

    async def query() -> list[tuple[str, str]]:
        conn = await asyncpg.connect(PG_DSN, server_settings={"search_path": schema})
        try:
            return [tuple(r) for r in await conn.fetch("SELECT request_id, id FROM events WHERE kind != 'impression'")]
        finally:
            await conn.close()

    try:
        return asyncio.run(query())
    except asyncpg.UndefinedTableError:
        return []


class NatsFeedback:
    """The feedback messages of this run in the origin's JetStream streams since the test began, repeats kept
    (read with consumers of our own that ack nothing: the shared streams are left as they are)."""

    KINDS = ("click", "purchase")

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._nc = None
        self._start = self._loop.run_until_complete(self._heads())

    def _stream(self, kind: str) -> str:
        return f"EDGEREC_EVENTS_{kind.upper()}"

    async def _heads(self) -> dict[str, int]:
        import nats
        from nats.js.errors import NotFoundError

        self._nc = await nats.connect(NATS_URL, connect_timeout=5)
        heads = {}
        for kind in self.KINDS:
            try:
                heads[kind] = (await self._nc.jetstream().stream_info(self._stream(kind))).state.last_seq + 1
            except NotFoundError:  # no origin created it yet: all of it is new
                heads[kind] = 1
        return heads

    async def _read(self) -> list[tuple[str, str]]:
        import nats.errors
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
        from nats.js.errors import NotFoundError

        found = []
        for kind in self.KINDS:
            config = ConsumerConfig(
                deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
                opt_start_seq=self._start[kind],
                ack_policy=AckPolicy.NONE,
                inactive_threshold=30.0,
            )
            try:
                subscription = await self._nc.jetstream().pull_subscribe(
                    f"edgerec.events.{kind}", durable=None, stream=self._stream(kind), config=config
                )
            except NotFoundError:
                continue
            try:
                while True:
                    try:
                        messages = await subscription.fetch(1000, timeout=0.5)
                    except (nats.errors.TimeoutError, asyncio.TimeoutError):
                        break
                    events = [json.loads(m.data) for m in messages]
                    found += [(e["request_id"], e["id"]) for e in events if e["request_id"].startswith(TAG)]
            finally:
                await subscription.unsubscribe()
        return found

    def __call__(self) -> list[tuple[str, str]]:
        return self._loop.run_until_complete(self._read())

    def close(self) -> None:
        self._loop.run_until_complete(self._nc.close())
        self._loop.close()


def post(edge, events: list[dict]) -> None:
    status, body = http_json(edge.url, "POST", "/v1/events", {"events": events})
    assert status == 202 and body == {"accepted": len(events)}, body


@pytest.mark.parametrize("sink", ["sqlite", "postgresql", "nats"])
def test_an_event_retried_with_its_event_id_on_one_edge_or_two_is_stored_once_at_the_origin(tmp_path, bundle_dir, sink):
    schema: PgSchema | None = None
    nats_feedback: NatsFeedback | None = None
    stored: Callable[[], list[tuple[str, str]]]
    if sink == "sqlite":
        cluster = Cluster(tmp_path, bundle_dir)
        stored = lambda: sqlite_feedback(tmp_path / "origin" / "events.db")  # noqa: E731
    elif sink == "postgresql":
        if PG_UNREACHABLE:
            missing_part(PG_UNREACHABLE)
        schema = PgSchema()
        schema.create()
        cluster = Cluster(tmp_path, bundle_dir, dsn=schema.dsn)
        stored = lambda: postgresql_feedback(schema.name)  # noqa: E731
    else:
        if NATS_DOWN:
            missing_part(NATS_DOWN)
        cluster = Cluster(tmp_path, bundle_dir, origin_env={"EDGEREC_EVENT_SINK": "nats", "EDGEREC_NATS_URL": NATS_URL})
        stored = nats_feedback = NatsFeedback()
    try:
        cluster.start_origin()
        cluster.publish()
        first, second = cluster.start_edge("GB"), cluster.start_edge("GB")  # two replicas of the region
        answer = f"{TAG}{sink}"
        click = {"type": "click", "request_id": answer, "offer_ids": ["GB-1"], "event_id": "k1", "shopper_id": "s1"}
        purchase = {**click, "type": "purchase", "value": 5.0, "currency": "GBP", "event_id": "k2"}
        post(first, [click])
        post(first, [click])  # retried on the same edge
        post(second, [click])  # and on another replica
        post(second, [purchase, purchase])  # twice in one request, then again elsewhere
        post(first, [purchase])
        same_key_other_answer = {**click, "request_id": f"{answer}-other"}  # keys are scoped by the answer
        post(second, [same_key_other_answer])
        plain = {"type": "click", "request_id": f"{answer}-plain", "offer_ids": ["GB-1"]}  # no event_id
        post(first, [plain])
        post(first, [plain])

        mine = lambda: [row for row in stored() if row[0].startswith(answer)]  # noqa: E731
        wait_until(lambda: len(mine()) >= 5, timeout_s=60, what="the events at the origin")
        time.sleep(1.5)  # the edges' spools are shipped (and their segments deleted) by now: nothing more comes
        wait_until(
            lambda: (
                not any(
                    any(Path(d).rglob("*.seg"))
                    for d in (tmp_path / "edge-GB", tmp_path / "edge-GB-2")
                    if Path(d).exists()
                )
            ),
            what="every spool segment acknowledged",
        )
        rows = mine()
        by_request = collections.Counter(request_id for request_id, _ in rows)
        assert by_request == {answer: 2, f"{answer}-other": 1, f"{answer}-plain": 2}, rows
        ids = {row_id for request_id, row_id in rows if request_id == answer}
        assert ids == {feedback_event_id(answer, "k1"), feedback_event_id(answer, "k2")}
        assert feedback_event_id(f"{answer}-other", "k1") in {row_id for _, row_id in rows}
    finally:
        cluster.stop()
        if nats_feedback is not None:
            nats_feedback.close()
        if schema is not None:
            schema.drop()


def test_a_bad_event_id_gets_a_422_naming_the_event_and_the_field(seeded):
    edge = seeded.start_edge("GB")
    good = {"type": "click", "request_id": "r1", "offer_ids": ["GB-1"]}
    for bad in ("", "has space", "x" * 129, 7):
        body = json.dumps({"events": [good, {**good, "event_id": bad}]}).encode()
        status, _, raw = http_call(edge.url, "POST", "/v1/events", body, {"Content-Type": "application/json"})
        error = json.loads(raw)["error"]
        assert status == 422 and error["code"] == "invalid_request", raw
        assert error["message"].startswith("events[1].event_id: ") and "the same on every retry" in error["message"]


def test_a_worker_learns_a_client_named_event_into_the_profile_once_and_again_if_learning_failed(tmp_path):
    from edge_node.events import EventRecorder
    from edge_node.spool import EventSpool
    from origin_sync.wire.events import FeedbackEvent

    recorder = EventRecorder(EventSpool(tmp_path), "pseudonym-secret")
    named = FeedbackEvent(type="click", request_id="r1", offer_ids=["GB-1"], shopper_id="s1", event_id="k1")
    plain = FeedbackEvent(type="click", request_id="r1", offer_ids=["GB-1"], shopper_id="s1")
    events = [(named, "GB"), (plain, "GB")]
    ids = [feedback_event_id("r1", "k1"), "random-id"]
    assert recorder.claim_learning(ids, events) == [ids[0]]
    assert recorder.claim_learning(ids, events) == []  # the retry: learned already (the plain one always is)
    recorder.release([ids[0]])  # learning failed: a retry learns it
    assert recorder.claim_learning(ids, events) == [ids[0]]
