"""`ChangeLogStore`, the one class the origin talks to: each method is one transaction over the modules beside it,
on the engine it was given (`SQLiteStore` and `PostgresStore` only choose the engine)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Awaitable, Callable, TypeVar

from edgerec.core.files import BlobStore
from origin_sync.origin.store import (
    audit,
    blobs,
    changelog,
    digests,
    experiments,
    models,
    offers,
    pipeline,
    profiles,
    schema,
    signing_keys,
)
from origin_sync.origin.store.dialect import Connection, Engine, PostgresEngine, SQLiteEngine
from origin_sync.origin.store.types import (
    PAGE_LIMIT,
    PUBLISH_STATES,
    DeltaPage,
    KeySetUpdate,
    LogHead,
    OfferUpdate,
)

T = TypeVar("T")


async def _prepare(conn: Connection) -> None:
    """The schema, and the state digests rebuilt from the whole state where they lag the head."""
    await schema.create(conn)
    await changelog.lock_head(conn)  # no other origin writes while the vectors are rebuilt
    version = await changelog.head_version(conn)
    if await digests.digests_at(conn) != version:
        await digests.rebuild(
            conn,
            version,
            await offers.every_offer(conn),
            await models.active_ref(conn),
            await experiments.every_experiment(conn),
        )


async def _snapshot(conn: Connection, regions: tuple[str, ...]) -> dict[str, Any]:
    head = await changelog.head(conn)
    return {
        "version": head.version,
        "head_hash": head.hash,
        "model": await models.active_ref(conn),
        "experiments": await experiments.every_experiment(conn),
        "offers": await offers.in_regions(conn, regions),
        "signing_keys": await signing_keys.key_set(conn),
    }


class ChangeLogStore:
    """What the origin needs from its database; every method is a coroutine and safe to call concurrently."""

    def __init__(self, engine: Engine, blob_dir: Path | str) -> None:
        self.engine = engine
        self.blobs = BlobStore(Path(blob_dir))
        self._listeners: list[Callable[[], None]] = []
        self._open = False

    def on_change(self, callback: Callable[[], None]) -> None:
        """Call `callback` (in the event loop) whenever a change is committed, by this process or, where the
        database can say so, by another one."""
        self._listeners.append(callback)

    def _changed(self) -> None:
        for callback in self._listeners:
            callback()

    async def open(self) -> None:
        if self._open:
            return
        await self.engine.open()
        await self.engine.transaction(_prepare, write=True)
        await self.engine.listen(self._changed)
        self._open = True

    async def close(self) -> None:
        await self.engine.close()

    async def _write(self, work: Callable[..., Awaitable[T]], *args: Any, notify: bool = True) -> T:
        async def locked(conn: Connection) -> T:
            await changelog.lock_head(conn)
            return await work(conn, *args)

        result = await self.engine.transaction(locked, write=True)
        if notify:
            self._changed()
        return result

    async def _read(self, work: Callable[..., Awaitable[T]], *args: Any) -> T:
        """In one read transaction, so that the version, its hash and the rows agree."""
        return await self.engine.transaction(lambda conn: work(conn, *args), write=False)

    async def _run(self, work: Callable[..., Awaitable[T]], *args: Any) -> T:
        return await self.engine.run(lambda conn: work(conn, *args))

    # -- offers
    async def upsert_offer(self, offer: dict[str, Any]) -> int:
        return await self._write(offers.upsert, offer)

    async def delete_offer(self, offer_id: str) -> int:
        return await self._write(offers.delete, offer_id)

    async def upsert_offers(self, batch: list[dict[str, Any]]) -> tuple[int, list[str]]:
        """Validated offers in one transaction, in order: for each, "created", "changed" or "unchanged" (an offer
        equal to the stored one is not written, so it adds no change); returns (head version, outcomes)."""

        async def write(conn: Connection) -> tuple[int, list[str]]:
            outcomes = await offers.upsert_many(conn, batch)
            return await changelog.head_version(conn), outcomes

        return await self._write(write)

    async def update_offer(self, offer_id: str, update: OfferUpdate) -> tuple[int, dict[str, Any]]:
        """In one transaction: the stored offer (NotFound without one) is replaced by `update(stored)`; an exception
        from `update` aborts it, and a result equal to the stored offer writes nothing. Returns (head version,
        offer)."""

        async def write(conn: Connection) -> tuple[int, dict[str, Any]]:
            offer = await offers.update(conn, offer_id, update)
            return await changelog.head_version(conn), offer

        return await self._write(write)

    async def offer(self, offer_id: str) -> dict[str, Any]:
        return await self._run(offers.offer, offer_id)

    # -- models
    async def publish_model(self, manifest: dict[str, Any], onnx_bytes: bytes, *, state: str) -> tuple[int, str]:
        """Store a model bundle in `state` (one of PUBLISH_STATES; `active` activates it): (data version, the
        model's state). Publishing a stored version again with the same bytes is idempotent (see
        models.state_after_publish); with other bytes it is a ValueError."""
        if state not in PUBLISH_STATES:
            raise ValueError(f"a model is published as one of {', '.join(PUBLISH_STATES)}, not {state!r}")
        sha = await asyncio.to_thread(self.blobs.put, onnx_bytes)
        if manifest.get("sha256") != sha:
            raise ValueError(f"manifest sha256 {manifest.get('sha256')!r} does not match the model bytes ({sha})")
        return await self._write(models.publish, manifest, sha, onnx_bytes, state)

    async def activate_model(self, model_version: str) -> tuple[int, bool]:
        """Make a stored model the active one (the previous active one is retired; NotFound for an unknown one):
        (data version, True) with the change appended, or (the current data version, False) when it is active
        already: nothing is appended, so no edge rebuilds."""
        version, changed = await self._write(models.activate_unless_active, model_version, notify=False)
        if changed:
            self._changed()
        return version, changed

    async def models(self) -> list[dict[str, Any]]:
        """Every stored model, oldest first: version, sha256, created_at, state and `active` (state == active)."""
        return await self._run(models.every_model)

    async def retire_model(self, model_version: str) -> str:
        """Retire a candidate or published model (NotFound, or ValueError for the active one): its former state."""
        return await self._write(models.retire, model_version, notify=False)

    async def model_bundle(self, model_version: str) -> tuple[dict[str, Any], bytes]:
        """(manifest, model.onnx bytes) of a stored model (NotFound)."""
        manifest, sha = await self._run(models.bundle_of, model_version)
        return manifest, await asyncio.to_thread((await self.blob_path(sha)).read_bytes)

    async def blob_path(self, sha256: str) -> Path:
        """A local file holding the blob (NotFound if there is no such blob)."""
        return await blobs.blob_path(self.engine, self.blobs, sha256)

    # -- experiments
    async def upsert_experiment(self, experiment: dict[str, Any]) -> int:
        """Store a validated experiment, its variants' model refs resolved (NotFound for an unknown model)."""
        return await self._write(experiments.upsert, experiment)

    async def delete_experiment(self, experiment_id: str) -> int:
        return await self._write(experiments.delete, experiment_id)

    async def experiment(self, experiment_id: str) -> dict[str, Any]:
        return await self._run(experiments.experiment, experiment_id)

    async def experiments(self) -> list[dict[str, Any]]:
        return await self._run(experiments.every_experiment)

    # -- signing keys
    async def key_set(self) -> dict[str, Any] | None:
        """The published signing-key set, or None while none was ever published."""
        return await self._run(signing_keys.key_set)

    async def update_key_set(self, update: KeySetUpdate) -> tuple[int, dict[str, Any]]:
        """In one transaction: the new key set `update(current)` is stored and appended to the change log as a
        `signing_keys` change for every region; returns (version, key set). An exception from `update` aborts it."""
        return await self._write(signing_keys.update_key_set, update)

    # -- shopper profiles (keyed by pseudonym)
    async def record_profile_events(self, rows: list[profiles.Row]) -> dict[str, Any]:
        """Events (pseudonym, key, kind, item, ts, region) folded into summaries, each (pseudonym, key) once; one
        `profile_upsert` change per summary that changed (profiles.record_events)."""
        return await self._write(profiles.record_events, rows)

    async def record_feedback(self, events: list[dict[str, Any]]) -> dict[str, Any]:
        """An ingested event batch's feedback folded into its shoppers' summaries (idempotent)."""
        return await self._write(profiles.record_feedback, events)

    async def erase_profile(self, pseudonym: str) -> dict[str, Any]:
        """The shopper's summary and events deleted, their shipped summaries redacted in the log, and a
        `profile_erase` change for every region appended."""
        return await self._write(profiles.erase, pseudonym)

    async def profiles_page(self, regions: tuple[str, ...], after: str = "", limit: int = 1000) -> dict[str, Any]:
        """{"version", "profiles": [[pseudonym, summary, summary_ts]], "next"}: one page of the regions' summaries."""
        return await self._read(profiles.page, regions, after, limit)

    async def export_profile(self, pseudonym: str) -> dict[str, Any] | None:
        return await self._read(profiles.export, pseudonym)

    # -- the change log
    async def head(self) -> LogHead:
        return await self._run(changelog.head)

    async def head_version(self) -> int:
        return (await self.head()).version

    async def snapshot(self, regions: tuple[str, ...]) -> dict[str, Any]:
        """{"version", "head_hash", "offers", "model", "experiments", "signing_keys"}: the state an edge serving
        `regions` needs, at one version."""
        return await self._read(_snapshot, regions)

    async def changes_since(self, since: int, regions: tuple[str, ...], limit: int = PAGE_LIMIT) -> DeltaPage:
        return await self._read(changelog.changes_since, since, regions, limit)

    async def compact(self, keep_versions: int | None = None, keep_seconds: float | None = None) -> int:
        """Drop log entries no longer needed by the retention; returns the new floor (oldest `since` served)."""
        return await self._write(changelog.compact, keep_versions, keep_seconds, notify=False)

    async def verify_chain(self) -> LogHead:
        """Recompute every retained link of the hash chain; raises ValueError at the first broken one."""
        return await self._read(changelog.verify_chain)

    # -- audit log of admin calls
    async def record_audit(self, entry: dict[str, Any]) -> None:
        """Append one audit entry: ts, actor, method, path, target, peer, status (see AUDIT_FIELDS)."""
        await self._run(audit.record, entry)

    async def audit_log(self, limit: int = 100) -> list[dict[str, Any]]:
        """The newest `limit` audit entries, newest first."""
        return await self._run(audit.newest, limit)

    async def record_decision(self, entry: dict[str, Any]) -> int:
        """Append one of the learning pipeline's decisions (see pipeline.DECISION_FIELDS); returns its id."""
        return await self._write(pipeline.record, entry, notify=False)

    async def decisions(self, pipeline_name: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """The pipeline's newest decisions, newest first."""
        return await self._run(pipeline.newest, pipeline_name, limit)

    async def offer_skus(self, offer_ids: list[str]) -> dict[str, str]:
        """offer id -> SKU of those stored offers."""
        return await self._run(offers.skus_of, offer_ids)

    async def purge_audit(self, before_ts: float) -> int:
        """Delete audit entries older than `before_ts` (epoch seconds); returns how many."""
        return await self._run(audit.purge, before_ts)


class SQLiteStore(ChangeLogStore):
    """The embedded default: one SQLite file, ready once constructed. SQLite serialises writers itself (BEGIN
    IMMEDIATE); long-polls in this process are woken directly, writers in other processes are noticed by the
    long-poll's periodic re-check."""

    def __init__(self, db_path: Path | str, blob_dir: Path | str) -> None:
        engine = SQLiteEngine(db_path)
        super().__init__(engine, blob_dir)
        engine.transaction_now(_prepare, write=True)
        self._open = True
        self._db = engine.db  # the raw connection, for PRAGMAs a caller tunes (benchmarks/sync.py's seeding)


class PostgresStore(ChangeLogStore):
    """The production store (asyncpg pool). Several origin processes may share one database: every write takes
    the `log_head` row lock first, so writers are serialised and commit in version order; long-polls in every
    process are woken by LISTEN/NOTIFY. Model blobs live in the database too, cached on local disk."""

    def __init__(
        self, dsn: str, blob_dir: Path | str, schema: str | None = None, min_size: int = 1, max_size: int = 10
    ) -> None:
        self.dsn, self.schema = dsn, schema
        self.channel = f"edgerec_changes_{schema}" if schema else "edgerec_changes"
        super().__init__(
            PostgresEngine(dsn, schema, channel=self.channel, min_size=min_size, max_size=max_size), blob_dir
        )


def open_store(dsn: str | None, db_path: Path | str, blob_dir: Path | str) -> ChangeLogStore:
    """PostgreSQL when a DSN is given, else the SQLite file. Call `await store.open()` before use."""
    if dsn:
        return PostgresStore(dsn, blob_dir)
    return SQLiteStore(db_path, blob_dir)
