"""The change log on both backends, against the real databases: SQLite, and PostgreSQL at 127.0.0.1:5432.

Every PostgreSQL test runs in its own schema (created and dropped), so runs never collide.
"""

from __future__ import annotations

import asyncio
import secrets
import threading

import pytest

from edgerec.cli.process import free_port, http_json
from edgerec.cli.services import origin_service
from origin_sync.origin.store import (
    ChangeLogStore,
    Compacted,
    NotFound,
    PostgresStore,
    SQLiteStore,
)
from origin_sync.wire.experiments import ExperimentOverlap, validate_experiment
from origin_sync.wire.protocol import GENESIS_HASH, chain_hash, unpack
from tests.conftest import PG_DSN, make_offer, needs_pg
from tests.store_support import BACKENDS, run_on_store


def run(coro):
    return asyncio.run(coro)


@pytest.mark.parametrize("kind", BACKENDS)
def test_versions_are_gapless_and_the_hash_chain_verifies(kind, tmp_path, request):
    async def scenario(store: ChangeLogStore) -> None:
        versions = [await store.upsert_offer(make_offer(f"o{i}", "10001")) for i in range(5)]
        versions.append(await store.delete_offer("o0"))
        assert versions == list(range(1, 7))
        head = await store.verify_chain()
        assert head.version == 6 and head.hash != GENESIS_HASH
        with pytest.raises(NotFound):
            await store.delete_offer("o0")
        assert (await store.head()).version == 6  # a refused write leaves no gap

    run_on_store(kind, tmp_path, request, scenario)


@pytest.mark.parametrize("kind", BACKENDS)
def test_changes_since_are_region_scoped_and_chained(kind, tmp_path, request):
    async def scenario(store: ChangeLogStore) -> None:
        await store.upsert_offer(make_offer("gb", "10001", region="GB"))
        await store.upsert_offer(make_offer("de", "10002", region="DE"))
        await store.upsert_offer(make_offer("gb", "10001", region="FR"))  # leaves GB: GB must hear of it
        page = await store.changes_since(0, ("GB",))
        assert page.to == 3 and page.from_hash == GENESIS_HASH
        bodies = [unpack(c["body"]) for c in page.changes]
        assert [b["version"] for b in bodies] == [1, 3]
        # The chain re-computes from the entries and the bridge of version 2 (another region's change).
        digest = chain_hash(page.changes[1]["prev"], page.changes[1]["body"])
        assert digest == page.to_hash == (await store.head()).hash
        snap = await store.snapshot(("DE",))
        assert [o["id"] for o in snap["offers"]] == ["de"] and snap["version"] == 3
        assert snap["head_hash"] == page.to_hash

    run_on_store(kind, tmp_path, request, scenario)


@pytest.mark.parametrize("kind", BACKENDS)
def test_compaction_keeps_the_retention_and_refuses_older_versions(kind, tmp_path, request):
    async def scenario(store: ChangeLogStore) -> None:
        for i in range(10):
            await store.upsert_offer(make_offer(f"o{i}", "10001"))
        assert await store.compact(keep_versions=4) == 6
        with pytest.raises(Compacted):
            await store.changes_since(5, ("GB",))
        page = await store.changes_since(6, ("GB",))
        assert [unpack(c["body"])["version"] for c in page.changes] == [7, 8, 9, 10]
        assert page.from_hash == page.changes[0]["prev"]
        await store.verify_chain()
        assert await store.compact(keep_seconds=3600) == 6  # nothing that young is dropped
        assert len((await store.snapshot(("GB",)))["offers"]) == 10

    run_on_store(kind, tmp_path, request, scenario)


@pytest.mark.parametrize("kind", BACKENDS)
def test_concurrent_writers_of_one_store_get_one_gapless_sequence(kind, tmp_path, request):
    async def scenario(store: ChangeLogStore) -> None:
        versions = await asyncio.gather(*(store.upsert_offer(make_offer(f"o{i}", "10001")) for i in range(40)))
        assert sorted(versions) == list(range(1, 41))
        await store.verify_chain()

    run_on_store(kind, tmp_path, request, scenario)


@pytest.mark.parametrize("kind", BACKENDS)
def test_overlapping_experiments_are_refused_even_when_written_at_once(kind, tmp_path, request):
    def experiment(eid: str, regions: list[str], start: float | None = None, end: float | None = None) -> dict:
        return validate_experiment(
            {
                "id": eid,
                "variants": [{"name": "control"}, {"name": "b"}],
                "regions": regions,
                "start": start,
                "end": end,
            }
        )

    async def scenario(store: ChangeLogStore) -> None:
        await store.upsert_experiment(experiment("gb-1", ["GB"], end=2_000_000_000))
        with pytest.raises(ExperimentOverlap, match="gb-1"):
            await store.upsert_experiment(experiment("gb-2", ["GB", "DE"], start=1_900_000_000))
        with pytest.raises(ExperimentOverlap, match="gb-1"):
            await store.upsert_experiment(experiment("everywhere", []))  # no regions = every region
        head = (await store.head()).version
        await store.upsert_experiment(experiment("de-1", ["DE"]))  # another region
        await store.upsert_experiment(experiment("gb-later", ["GB"], start=2_000_000_000))  # after gb-1 ends
        await store.upsert_experiment(experiment("gb-1", ["GB"], end=1_999_000_000))  # replacing itself is fine
        assert (await store.head()).version == head + 3  # a refused write left no change behind
        # Two overlapping experiments written at the same moment: exactly one gets in.
        results = await asyncio.gather(
            store.upsert_experiment(experiment("fr-a", ["FR"])),
            store.upsert_experiment(experiment("fr-b", ["FR"])),
            return_exceptions=True,
        )
        assert sorted(type(r).__name__ for r in results) == ["ExperimentOverlap", "int"]
        assert sorted(e["id"] for e in await store.experiments()) == [
            "de-1",
            "fr-a" if isinstance(results[0], int) else "fr-b",
            "gb-1",
            "gb-later",
        ]

    run_on_store(kind, tmp_path, request, scenario)


def _manifest(version: str, data: bytes) -> dict:
    import hashlib

    return {"version": version, "sha256": hashlib.sha256(data).hexdigest()}


@pytest.mark.parametrize("kind", BACKENDS)
def test_activating_the_model_already_active_appends_nothing(kind, tmp_path, request):
    async def scenario(store: ChangeLogStore) -> None:
        await store.publish_model(_manifest("m-1", b"one"), b"one", state="active")
        published, _ = await store.publish_model(_manifest("m-2", b"two"), b"two", state="active")
        assert await store.activate_model("m-2") == (published, False)  # already active: nothing appended
        assert (await store.head()).version == published
        assert (await store.changes_since(published, ("GB",))).changes == []
        assert await store.activate_model("m-1") == (published + 1, True)  # a real roll back is a change
        assert await store.activate_model("m-1") == (published + 1, False)
        assert [m["version"] for m in await store.models() if m["active"]] == ["m-1"]
        with pytest.raises(NotFound):
            await store.activate_model("nope")
        assert (await store.verify_chain()).version == published + 1

    run_on_store(kind, tmp_path, request, scenario)


@pytest.mark.parametrize("kind", BACKENDS)
def test_an_experiment_naming_an_unknown_model_is_refused_for_that_before_any_overlap(kind, tmp_path, request):
    async def scenario(store: ChangeLogStore) -> None:
        await store.upsert_experiment(
            validate_experiment({"id": "gb-1", "variants": [{"name": "a"}, {"name": "b"}], "regions": ["GB"]})
        )
        head = (await store.head()).version
        overlapping = validate_experiment(
            {"id": "gb-2", "variants": [{"name": "a"}, {"name": "b", "model": "nope"}], "regions": ["GB"]}
        )
        with pytest.raises(NotFound, match="nope"):  # the body's own mistake first, not ExperimentOverlap
            await store.upsert_experiment(overlapping)
        await store.publish_model(_manifest("nope", b"now it exists"), b"now it exists", state="active")
        with pytest.raises(ExperimentOverlap, match="gb-1"):  # then, with the model published, the overlap
            await store.upsert_experiment(overlapping)
        assert (await store.head()).version == head + 1  # only the publish appended a change

    run_on_store(kind, tmp_path, request, scenario)


@needs_pg
def test_several_origin_processes_on_one_postgresql_produce_one_gapless_sequence(tmp_path, pg_schema):
    admin, sync = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    origins = [
        origin_service(tmp_path, free_port(), admin, sync, dsn=pg_schema.dsn, name=f"origin {i}") for i in range(3)
    ]
    for origin in origins:
        origin.start()
    try:
        for origin in origins:
            origin.wait_ready("/healthz")
        results: list[int] = []
        errors: list[str] = []

        def writer(origin, n: int) -> None:
            for i in range(n):
                status, body = http_json(
                    origin.url,
                    "PUT",
                    f"/v1/admin/offers/{origin.port}-{i}",
                    make_offer(f"{origin.port}-{i}", "10001"),
                    {"Authorization": f"Bearer {admin}"},
                )
                if status == 200:
                    results.append(body["data_version"])
                else:
                    errors.append(f"{status} {body}")

        threads = [threading.Thread(target=writer, args=(o, 25)) for o in origins for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        assert sorted(results) == list(range(1, 151))

        async def verify() -> None:
            store = PostgresStore(PG_DSN, tmp_path / "verify-blobs", schema=pg_schema.name)
            await store.open()
            try:
                head = await store.verify_chain()
                assert head.version == 150
            finally:
                await store.close()

        run(verify())
        # Every origin serves the same head.
        for origin in origins:
            status, body = http_json(origin.url, "GET", "/v1/admin/status", None, {"Authorization": f"Bearer {admin}"})
            assert status == 200 and body["data_version"] == 150
    finally:
        for origin in origins:
            origin.stop()


@needs_pg
def test_a_long_poll_on_one_origin_wakes_on_a_write_through_another(tmp_path, pg_schema):
    import time

    from edgerec.cli.process import http_call
    from edgerec.cli.services import ensure_signing_keys
    from origin_sync.wire.signing import Verifier, open_envelope

    admin, sync = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    a, b = (origin_service(tmp_path, free_port(), admin, sync, dsn=pg_schema.dsn, name=f"origin {i}") for i in "ab")
    a.start(), b.start()
    try:
        a.wait_ready("/healthz"), b.wait_ready("/healthz")
        timer = threading.Timer(
            0.5,
            lambda: http_json(
                b.url, "PUT", "/v1/admin/offers/x", make_offer("x", "10001"), {"Authorization": f"Bearer {admin}"}
            ),
        )
        started = time.monotonic()
        timer.start()
        status, _, raw = http_call(
            a.url,
            "GET",
            "/v1/sync/deltas?regions=GB&since=0&wait=20",
            headers={"Authorization": f"Bearer {sync}"},
            timeout=30,
        )
        elapsed = time.monotonic() - started
        timer.join()
        assert status == 200 and elapsed < 1.4, elapsed  # NOTIFY, not the 1 s re-check fallback alone
        batch = open_envelope(raw, "deltas", Verifier.from_config(str(ensure_signing_keys(tmp_path)[1])))
        assert batch["to"] == 1 and len(batch["changes"]) == 1
    finally:
        a.stop(), b.stop()


def test_a_sqlite_database_from_before_offer_regions_is_migrated(tmp_path):
    """Older SQLite files kept an offer's regions only inside its body: at open they are copied out, so a region's
    snapshot still holds exactly its offers, and the versions, the chain and the digests go on unchanged."""
    import sqlite3

    regions = (("GB",), ("DE",), ("DE", "GB"), ("FR",))

    async def state(store: ChangeLogStore) -> list:
        return [(await store.snapshot(r), (await store.changes_since(0, r)).state_digest) for r in regions]

    async def scenario() -> None:
        store = SQLiteStore(tmp_path / "origin.db", tmp_path / "blobs")
        await store.upsert_offer(make_offer("gb", "10001", region="GB"))
        await store.upsert_offer(make_offer("de", "10002", region="DE"))
        await store.upsert_offer(make_offer("both", "10003") | {"regions": ["DE", "GB"]})
        before = await state(store)
        await store.close()
        db = sqlite3.connect(tmp_path / "origin.db")
        db.execute("ALTER TABLE offers DROP COLUMN regions")  # the table as it was: id, body, version
        db.close()

        store = SQLiteStore(tmp_path / "origin.db", tmp_path / "blobs")
        try:
            assert await state(store) == before
            assert [o["id"] for o in before[0][0]["offers"]] == ["both", "gb"]
            assert await store.upsert_offer(make_offer("fr", "10004", region="FR")) == 4
            assert [o["id"] for o in (await store.snapshot(("FR",)))["offers"]] == ["fr"]
            assert (await store.verify_chain()).version == 4
        finally:
            await store.close()

    run(scenario())


@needs_pg
def test_notifications_resume_after_the_database_ends_the_listening_connection(tmp_path, pg_schema):
    """A restart or a failover ends the LISTEN connection: the store connects again, says so once (changes may have
    been missed meanwhile), and then hears the other origin's writes again."""

    async def scenario() -> None:
        listener = PostgresStore(PG_DSN, tmp_path / "a", schema=pg_schema.name)
        writer = PostgresStore(PG_DSN, tmp_path / "b", schema=pg_schema.name)
        await listener.open(), await writer.open()
        heard = asyncio.Event()
        listener.on_change(heard.set)
        try:
            await writer.upsert_offer(make_offer("before", "10001"))
            await asyncio.wait_for(heard.wait(), 5)
            heard.clear()
            pid = listener.engine._listen_conn.get_server_pid()
            await writer.engine.run(lambda conn: conn.fetch("SELECT pg_terminate_backend($1)", pid))
            await asyncio.wait_for(heard.wait(), 10)  # connected again, and said so
            assert listener.engine._listen_conn.get_server_pid() != pid
            heard.clear()
            await writer.upsert_offer(make_offer("after", "10002"))
            await asyncio.wait_for(heard.wait(), 5)
        finally:
            await listener.close(), await writer.close()

    asyncio.run(scenario())
