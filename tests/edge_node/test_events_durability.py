"""A 202 means kept: a real edge under event load from concurrent clients is SIGKILLed again and again (and stopped
cleanly once) and restarted on the same data directory; every event that got a 202 reaches the origin's sink, and
none twice (with `--events-ack write`, the default, and `fsync`; with the origin on each of its sinks: SQLite,
PostgreSQL, NATS JetStream; and with an edge of two worker processes, killed as a whole process group).

Between the edge and the origin sits a load balancer that loses the origin's answer to every third event batch: the
origin stored the batch, the edge sees a 502 and ships it again, so that "none twice" rests on the sink's
deduplication (the SQL sinks' batch ledger, JetStream's message ids), not on luck."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import http.client
import json
import random
import secrets
import sqlite3
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest
from aiohttp import web

from edgerec.cli.services import Cluster
from tests.conftest import (
    NATS_DOWN,
    NATS_URL,
    PG_DSN,
    PG_UNREACHABLE,
    PgSchema,
    missing_part,
    wait_until,
)
from tests.proxy_support import LoopbackProxy

KILLS = 3
CLIENTS = 4
TAG = f"t{secrets.token_hex(3)}-"  # this run's request ids: unique across runs, for the shared NATS stream


class AckLosingProxy(LoopbackProxy):
    """A plain HTTP hop (a load balancer) between the edge and the origin: passes every request and answer as they
    are, except that every `every`-th event batch the origin acknowledged gets a 502 instead of its answer (the
    acknowledgement lost on the way back). Everything else, the long-polls of sync included, passes untouched."""

    HOP_BY_HOP = frozenset(
        {
            "connection",
            "keep-alive",
            "transfer-encoding",
            "content-length",
            "host",
            "upgrade",
            "proxy-connection",
            "te",
            "trailer",
        }
    )

    def __init__(self, origin_url: str, every: int = 3) -> None:
        super().__init__(origin_url, max_body_bytes=256 * 1024 * 1024)
        self.every = every
        self.batches = self.lost = 0

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in self.HOP_BY_HOP}
        body = await request.read()
        async with self._session.request(
            request.method, self.origin_url + request.path_qs, data=body or None, headers=headers
        ) as resp:
            answer = await resp.read()
            out = {k: v for k, v in resp.headers.items() if k.lower() not in self.HOP_BY_HOP}
        if request.method == "POST" and request.path == "/v1/sync/events" and resp.status == 200:
            self.batches += 1
            if self.batches % self.every == 0:
                self.lost += 1
                return web.json_response(
                    {"error": {"code": "bad_gateway", "message": "upstream connection lost"}}, status=502
                )
        return web.Response(body=answer, status=resp.status, headers=out)


def feedback_in_sqlite(path: Path) -> list[str]:
    """The request_id of every feedback event (impressions aside) in the origin's SQLite sink, repeats kept."""
    if not path.exists():
        return []
    with contextlib.closing(sqlite3.connect(path)) as db:
        return [r for (r,) in db.execute("SELECT request_id FROM events WHERE kind != 'impression'")]


def feedback_in_postgresql(schema: str) -> list[str]:
    """The same, from the origin's PostgreSQL sink (its events table in the test's schema)."""
    import asyncpg

    async def query() -> list[str]:
        conn = await asyncpg.connect(PG_DSN, server_settings={"search_path": schema})
        try:
            return [r[0] for r in await conn.fetch("SELECT request_id FROM events WHERE kind != 'impression'")]
        finally:
            await conn.close()

    try:
        return asyncio.run(query())
    except asyncpg.UndefinedTableError:  # the origin has not created it yet
        return []


class NatsClicks:
    """The click messages the origin published to JetStream (stream EDGEREC_EVENTS_CLICK) since this drill began,
    read with a pull consumer of our own (no acks: it changes nothing on the stream) and kept in arrival order,
    repeats kept. The stream is shared with every other run against this NATS server: only the request ids this run
    made count (they carry its tag)."""

    STREAM, SUBJECT = "EDGEREC_EVENTS_CLICK", "edgerec.events.click"

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.seen: list[str] = []
        self._loop = asyncio.new_event_loop()
        self._nc = self._subscription = None
        self._start_seq = self._loop.run_until_complete(self._last_seq()) + 1

    async def _last_seq(self) -> int:
        import nats
        from nats.js.errors import NotFoundError

        self._nc = await nats.connect(NATS_URL, connect_timeout=5)
        try:
            return (await self._nc.jetstream().stream_info(self.STREAM)).state.last_seq
        except NotFoundError:  # no origin has created it yet: everything in it will be new
            return 0

    async def _fetch(self) -> None:
        import nats.errors
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

        if self._subscription is None:
            config = ConsumerConfig(
                deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
                opt_start_seq=self._start_seq,
                ack_policy=AckPolicy.NONE,
                inactive_threshold=120.0,
            )
            self._subscription = await self._nc.jetstream().pull_subscribe(
                self.SUBJECT, durable=None, stream=self.STREAM, config=config
            )
        while True:
            try:
                messages = await self._subscription.fetch(1000, timeout=0.5)
            except (nats.errors.TimeoutError, asyncio.TimeoutError):  # nats-py raises either when nothing is new
                return
            for message in messages:
                request_id = json.loads(message.data)["request_id"]
                if request_id.startswith(self.tag):
                    self.seen.append(request_id)

    def __call__(self) -> list[str]:
        self._loop.run_until_complete(self._fetch())
        return list(self.seen)

    def close(self) -> None:
        async def close() -> None:
            if self._subscription is not None:
                with contextlib.suppress(Exception):
                    await self._subscription.unsubscribe()
            await self._nc.close()

        self._loop.run_until_complete(close())
        self._loop.close()


class SinkOrigins:
    """One started origin per event sink, made on first use and shared by the drills of that sink (the faults are
    the edge's, not the origin's): (the cluster, what reads the feedback events back from its sink)."""

    def __init__(self, workdir: Path, bundle: Path) -> None:
        self.workdir, self.bundle = workdir, bundle
        self.started: dict[str, tuple[Cluster, Callable[[], list[str]]]] = {}
        self.nats_clicks: NatsClicks | None = None
        self.pg_schema: PgSchema | None = None

    def __call__(self, sink: str) -> tuple[Cluster, Callable[[], list[str]]]:
        if sink not in self.started:
            self.started[sink] = self._start(sink)
        return self.started[sink]

    def _start(self, sink: str) -> tuple[Cluster, Callable[[], list[str]]]:
        workdir = self.workdir / sink
        if sink == "sqlite":
            cluster = Cluster(workdir, self.bundle)

            def stored() -> list[str]:
                return feedback_in_sqlite(workdir / "origin" / "events.db")
        elif sink == "postgresql":
            if PG_UNREACHABLE:
                missing_part(PG_UNREACHABLE)
            schema = self.pg_schema = PgSchema()
            schema.create()
            cluster = Cluster(workdir, self.bundle, dsn=schema.dsn)

            def stored() -> list[str]:
                return feedback_in_postgresql(schema.name)
        else:
            if NATS_DOWN:
                missing_part(NATS_DOWN)
            cluster = Cluster(
                workdir, self.bundle, origin_env={"EDGEREC_EVENT_SINK": "nats", "EDGEREC_NATS_URL": NATS_URL}
            )
            # From the stream's head before the origin starts: nothing of this run is missed.
            stored = self.nats_clicks = NatsClicks(TAG)
        cluster.start_origin()
        cluster.publish()
        return cluster, stored

    def stop(self) -> None:
        for cluster, _ in self.started.values():
            cluster.stop()
        if self.nats_clicks is not None:
            self.nats_clicks.close()
        if self.pg_schema is not None:
            self.pg_schema.drop()


@pytest.fixture(scope="module")
def sink_origins(tmp_path_factory: pytest.TempPathFactory, bundle_dir: Path) -> Iterator[SinkOrigins]:
    origins = SinkOrigins(tmp_path_factory.mktemp("sinks"), bundle_dir)
    try:
        yield origins
    finally:
        origins.stop()


class EventClient(threading.Thread):
    """Posts 1-3 clicks a request over a keep-alive connection, each with a request_id of its own; records the ids
    of the answers that were 202 (and nothing else: an answer cut by the kill is not an acknowledgement)."""

    def __init__(self, number: int, port: int, stop: threading.Event, tag: str) -> None:
        super().__init__(name=f"event-client-{number}", daemon=True)
        self.number, self.port, self.stop, self.tag = number, port, stop, tag
        self.acknowledged: list[str] = []
        self.sent = self.cut = 0
        self.statuses: dict[int, int] = {}

    def run(self) -> None:
        rng = random.Random(self.number)
        connection: http.client.HTTPConnection | None = None
        while not self.stop.is_set():
            ids = [f"{self.tag}c{self.number}-{self.sent}-{k}" for k in range(rng.randint(1, 3))]
            self.sent += 1
            body = json.dumps({"events": [{"type": "click", "request_id": i, "offer_ids": ["GB-1"]} for i in ids]})
            try:
                if connection is None:
                    connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                connection.request("POST", "/v1/events", body, {"Content-Type": "application/json"})
                response = connection.getresponse()
                response.read()
            except (OSError, http.client.HTTPException):
                self.cut += 1  # the edge is down (killed, or not back yet): try again on a new connection
                if connection is not None:
                    connection.close()
                connection = None
                time.sleep(0.02)
                continue
            self.statuses[response.status] = self.statuses.get(response.status, 0) + 1
            if response.status == 202:
                self.acknowledged.extend(ids)
        if connection is not None:
            connection.close()


@pytest.mark.parametrize(
    "sink, ack, workers",
    [
        pytest.param("sqlite", "write", 1, id="sqlite-write"),
        pytest.param("sqlite", "fsync", 1, id="sqlite-fsync"),
        pytest.param("postgresql", "write", 1, id="postgresql-write"),
        pytest.param("nats", "write", 1, id="nats-write"),
        pytest.param("sqlite", "write", 2, id="sqlite-write-2-workers"),
    ],
)
def test_every_acknowledged_event_reaches_the_origin_once_across_edge_sigkills(sink_origins, sink, ack, workers):
    cluster, stored_anywhere = sink_origins(sink)
    label = f"edge-GB-{ack}-{workers}"  # a data directory (spool) of its own, kept across the restarts
    tag = f"{TAG}{ack}{workers}-"  # the request ids of this drill, apart from the others' on the same sink

    def stored() -> list[str]:
        return [i for i in stored_anywhere() if i.startswith(tag)]

    with AckLosingProxy(cluster.origin.url) as proxy:
        env = {"EDGEREC_EVENTS_ACK": ack}
        args = ["--workers", str(workers), "--profile-store", "embedded" if workers == 1 else "off"]
        edge = cluster.start_edge("GB", env=env, args=args, origin_url=proxy.url, label=label)
        stop = threading.Event()
        clients = [EventClient(n, edge.port, stop, tag) for n in range(CLIENTS)]
        for client in clients:
            client.start()
        rng = random.Random(26)
        try:
            for round_no in range(KILLS + 1):
                acknowledged_before = sum(len(c.acknowledged) for c in clients)
                time.sleep(rng.uniform(0.4, 0.9))  # under load: the kill lands in the middle of requests
                assert sum(len(c.acknowledged) for c in clients) > acknowledged_before, "no event was acknowledged"
                if round_no < KILLS:
                    edge.kill()  # SIGKILL to its whole process group (every worker): no clean stop, nothing flushed
                else:
                    edge.stop()  # and a clean stop (SIGTERM) under load: the answers in flight are settled, not lost
                # The same data directory: the same spool (with workers, a slot each under events/).
                edge = cluster.start_edge("GB", port=edge.port, env=env, args=args, origin_url=proxy.url, label=label)
            time.sleep(0.5)
        finally:
            stop.set()
            for client in clients:
                client.join(10)
        try:
            check_every_acknowledged_event_arrived_once(clients, stored, proxy, cluster.workdir / label, sink, workers)
        finally:
            edge.stop()


def check_every_acknowledged_event_arrived_once(
    clients: list[EventClient],
    stored: Callable[[], list[str]],
    proxy: AckLosingProxy,
    data_dir: Path,
    sink: str,
    workers: int,
) -> None:
    acknowledged = [i for c in clients for i in c.acknowledged]
    assert len(acknowledged) == len(set(acknowledged)) > 1000  # enough load for the kills to cut requests
    assert sum(c.cut for c in clients) >= KILLS  # the edge was away: requests were cut or refused
    assert all(set(c.statuses) == {202} for c in clients), [c.statuses for c in clients]

    kept = set(acknowledged)
    try:
        wait_until(
            lambda: kept <= set(stored()), timeout_s=30, interval_s=0.2, what="every acknowledged event at the origin"
        )
    except AssertionError:
        lost = sorted(kept - set(stored()))
        raise AssertionError(
            f"{len(lost)} of {len(kept)} events answered 202 never reached the {sink} sink: {lost[:10]}"
        ) from None
    spool = data_dir / "events"
    wait_until(lambda: not list(spool.rglob("*.seg")), timeout_s=15, what="the spool drained to the origin")
    assert proxy.lost >= 1, "no acknowledgement was lost: the deduplication was not put to the test"
    final = stored()
    assert kept <= set(final)  # every 202 was kept
    # And nothing arrived twice (an event cut unanswered may arrive once).
    repeated = sorted(i for i, n in collections.Counter(final).items() if n > 1)
    assert not repeated, f"{len(repeated)} events stored twice in the {sink} sink: {repeated[:10]}"
    # Each worker had a spool slot of its own, and every kill freed them all: a worker outliving a kill would
    # have held its slot and pushed the restarted ones to w2, w3.
    assert sorted(p.name for p in spool.iterdir()) == [f"w{n}" for n in range(workers)]


def test_an_unknown_events_ack_setting_is_refused_at_start(sink_origins):
    cluster, _ = sink_origins("sqlite")
    edge = cluster.start_edge("GB", env={"EDGEREC_EVENTS_ACK": "never"}, ready=False, label="edge-GB-never")
    assert edge.process.wait(timeout=30) == 2
    log = edge.log_tail()
    line = next(x for x in log.splitlines() if "--events-ack/EDGEREC_EVENTS_ACK" in x)
    assert "'never'" in line and "'write' or 'fsync'" in line and "Traceback" not in log
