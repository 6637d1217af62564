"""The origin's source of truth: offers, models and an append-only, hash-chained change log (SQLite or PostgreSQL).

Every write appends one change whose version is the next integer of one gapless sequence and whose hash extends
the chain: hash(v) = sha256(hash(v-1) || canonical change bytes). Both stores implement `ChangeLogStore`.
"""

from __future__ import annotations

import abc
import asyncio
import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TypeVar

from edgerec.core.files import BlobStore, NotFound, write_atomically
from origin_sync.wire import digest
from origin_sync.wire.experiments import check_no_overlap
from origin_sync.wire.protocol import (
    ALL_REGIONS,
    GENESIS_HASH,
    OP_EXPERIMENT_DELETE,
    OP_EXPERIMENT_UPSERT,
    OP_MODEL_ACTIVATE,
    OP_OFFER_DELETE,
    OP_OFFER_UPSERT,
    OP_SIGNING_KEYS,
    canonical,
    chain_hash,
    pack,
    unpack,
)

__all__ = ["ChangeLogStore", "SQLiteStore", "PostgresStore", "NotFound", "Compacted", "AheadOfOrigin",
           "DeltaPage", "LogHead", "open_store", "write_atomically", "MODEL_STATES", "MODEL_PUBLISHED",
           "MODEL_CANDIDATE", "MODEL_ACTIVE", "MODEL_RETIRED", "UnservableModel", "OfferUpdate"]

T = TypeVar("T")
PAGE_LIMIT = 10_000
AUDIT_FIELDS = ("ts", "actor", "method", "path", "target", "peer", "status")
KEY_SET_META = "signing_keys"  # the meta row holding the published signing-key set (JSON)
# The meta row naming the version the `state_digests` rows describe: every write advances both in its transaction,
# and an origin that finds them apart at start (a database from before the digests) rebuilds the rows.
DIGESTS_AT_META = "state_digests_at"
KeySetUpdate = Callable[[dict[str, Any] | None], dict[str, Any]]
OfferUpdate = Callable[[dict[str, Any]], dict[str, Any]]  # stored offer -> the new, validated offer

# A model's state (the models table's `state`): `published` is stored and served nowhere; `candidate` may be named by
# an experiment's variant (and is then served to that variant's shoppers only); `active` is the one model every edge
# serves; `retired` was active or a candidate and was replaced (an experiment may still name it, a rollback
# re-activates it). Only activation reaches the edges through the change log.
MODEL_PUBLISHED, MODEL_CANDIDATE, MODEL_ACTIVE, MODEL_RETIRED = "published", "candidate", "active", "retired"
MODEL_STATES = (MODEL_PUBLISHED, MODEL_CANDIDATE, MODEL_ACTIVE, MODEL_RETIRED)
PUBLISH_STATES = (MODEL_PUBLISHED, MODEL_CANDIDATE, MODEL_ACTIVE)  # what a publish may ask for


class Compacted(LookupError):
    """The versions asked for were compacted away; the edge must take a snapshot."""

    def __init__(self, since: int, floor: int) -> None:
        super().__init__(f"version {since} is below the compaction floor {floor}; take a snapshot")
        self.floor = floor


class AheadOfOrigin(LookupError):
    """The edge claims a version the origin never reached (e.g. the origin's database was restored)."""


class UnservableModel(ValueError):
    """An experiment names a model that is only `published`: it must become a candidate (or active) first."""


def _state_after_publish(stored: str, wanted: str) -> str | None:
    """Publishing a version again (the same bytes): the state it moves to, or None to keep the stored one. A publish
    never demotes (an active or candidate model stays so); `active` is reached through activation, not here."""
    if wanted == MODEL_CANDIDATE and stored in (MODEL_PUBLISHED, MODEL_RETIRED):
        return MODEL_CANDIDATE
    return None


def _unservable(model_version: str) -> UnservableModel:
    return UnservableModel(f"model {model_version!r} is only published: publish it as a candidate "
                           f"(edgerec model publish --candidate) or activate it first")


@dataclass(frozen=True)
class LogHead:
    version: int
    hash: bytes
    floor: int = 0


@dataclass(frozen=True)
class DeltaPage:
    """The changes after `since` that concern some regions, and the chain hashes at both ends."""

    since: int
    from_hash: bytes
    to: int
    to_hash: bytes
    head: int
    changes: list[dict[str, Any]]  # {"prev": bytes, "body": canonical change bytes}
    # sha256 of the regions' state vector at `to` (see digest.py); None when `to` is not the head (a full page)
    state_digest: bytes | None = None


def _change(version: int, op: str, prev_hash: bytes, fields: dict[str, Any]) -> tuple[bytes, bytes]:
    body = canonical({"version": version, "op": op, **fields})
    return body, chain_hash(prev_hash, body)


class ChangeLogStore(abc.ABC):
    """What the origin needs from its database; every method is a coroutine and safe to call concurrently."""

    blobs: BlobStore

    def __init__(self) -> None:
        self._listeners: list[Callable[[], None]] = []

    def on_change(self, callback: Callable[[], None]) -> None:
        """Call `callback` (in the event loop) whenever a change is committed, by this process or, where the
        database can say so, by another one."""
        self._listeners.append(callback)

    def _changed(self) -> None:
        for callback in self._listeners:
            callback()

    async def open(self) -> None:  # noqa: B027 - optional hook
        pass

    async def close(self) -> None:  # noqa: B027 - optional hook
        pass

    @abc.abstractmethod
    async def upsert_offer(self, offer: dict[str, Any]) -> int: ...

    @abc.abstractmethod
    async def delete_offer(self, offer_id: str) -> int: ...

    @abc.abstractmethod
    async def upsert_offers(self, offers: list[dict[str, Any]]) -> tuple[int, list[str]]:
        """Validated offers in one transaction, in order: for each, "created", "changed" or "unchanged" (an offer
        equal to the stored one is not written, so it adds no change); returns (head version, outcomes)."""

    @abc.abstractmethod
    async def update_offer(self, offer_id: str, update: OfferUpdate) -> tuple[int, dict[str, Any]]:
        """In one transaction: the stored offer (NotFound without one) is replaced by `update(stored)`; an exception
        from `update` aborts it, and a result equal to the stored offer writes nothing. Returns (head version,
        offer)."""

    @abc.abstractmethod
    async def publish_model(self, manifest: dict[str, Any], onnx_bytes: bytes, *, state: str) -> tuple[int, str]:
        """Store a model bundle in `state` (one of PUBLISH_STATES; `active` activates it): (data version, the
        model's state). Publishing a stored version again with the same bytes is idempotent (see
        _state_after_publish); with other bytes it is a ValueError."""

    @abc.abstractmethod
    async def activate_model(self, model_version: str) -> tuple[int, bool]:
        """Make a stored model the active one (the previous active one is retired; NotFound for an unknown one):
        (data version, True) with the change appended, or (the current data version, False) when it is active
        already: nothing is appended, so no edge rebuilds."""

    @abc.abstractmethod
    async def upsert_experiment(self, experiment: dict[str, Any]) -> int:
        """Store a validated experiment, its variants' model refs resolved (NotFound for an unknown model)."""

    @abc.abstractmethod
    async def delete_experiment(self, experiment_id: str) -> int: ...

    @abc.abstractmethod
    async def experiment(self, experiment_id: str) -> dict[str, Any]: ...

    @abc.abstractmethod
    async def experiments(self) -> list[dict[str, Any]]: ...

    @abc.abstractmethod
    async def head(self) -> LogHead: ...

    async def head_version(self) -> int:
        return (await self.head()).version

    @abc.abstractmethod
    async def offer(self, offer_id: str) -> dict[str, Any]: ...

    @abc.abstractmethod
    async def models(self) -> list[dict[str, Any]]:
        """Every stored model, oldest first: version, sha256, created_at, state and `active` (state == active)."""

    @abc.abstractmethod
    async def snapshot(self, regions: tuple[str, ...]) -> dict[str, Any]:
        """{"version", "head_hash", "offers", "model", "experiments", "signing_keys"}: the state an edge serving
        `regions` needs, at one version."""

    @abc.abstractmethod
    async def key_set(self) -> dict[str, Any] | None:
        """The published signing-key set, or None while none was ever published."""

    @abc.abstractmethod
    async def update_key_set(self, update: KeySetUpdate) -> tuple[int, dict[str, Any]]:
        """In one transaction: the new key set `update(current)` is stored and appended to the change log as a
        `signing_keys` change for every region; returns (version, key set). An exception from `update` aborts it."""

    @abc.abstractmethod
    async def changes_since(self, since: int, regions: tuple[str, ...], limit: int = PAGE_LIMIT) -> DeltaPage: ...

    # -- audit log of admin calls: kept beside the data they changed, outside the change log (never synced)
    async def record_audit(self, entry: dict[str, Any]) -> None:
        """Append one audit entry: ts, actor, method, path, target, peer, status (see AUDIT_FIELDS)."""
        raise NotImplementedError

    async def audit_log(self, limit: int = 100) -> list[dict[str, Any]]:
        """The newest `limit` audit entries, newest first."""
        raise NotImplementedError

    async def purge_audit(self, before_ts: float) -> int:
        """Delete audit entries older than `before_ts` (epoch seconds); returns how many."""
        raise NotImplementedError

    @abc.abstractmethod
    async def compact(self, keep_versions: int | None = None, keep_seconds: float | None = None) -> int:
        """Drop log entries no longer needed by the retention; returns the new floor (oldest `since` served)."""

    @abc.abstractmethod
    async def blob_path(self, sha256: str) -> Path:
        """A local file holding the blob (NotFound if there is no such blob)."""

    @abc.abstractmethod
    async def verify_chain(self) -> LogHead:
        """Recompute every retained link of the hash chain; raises ValueError at the first broken one."""


def _page_digest(to: int, head: int, digests_at: int | None, vectors: dict[str, Any],
                 regions: tuple[str, ...]) -> bytes | None:
    """The signed digest of the regions' state at `to`: only the head's is kept, so a page that stops short of the
    head (or rows an older origin left behind) carries none; the edge then proves its state at the next page."""
    if to != head or digests_at != head:
        return None
    return digest.checksum(digest.combined(vectors, regions))


def _rebuilt_vectors(offers: list[dict[str, Any]], model: dict[str, Any] | None,
                     experiments: list[dict[str, Any]]) -> dict[str, Any]:
    """Every scope's vector from the whole state (O(state)): for a database that has none yet."""
    elements: dict[str, list[bytes]] = {}
    for scope, element in [e for o in offers for e in digest.offer_elements(o)] + digest.model_element(model) + \
            [e for x in experiments for e in digest.experiment_element(x)]:
        elements.setdefault(scope, []).append(element)
    return {scope: digest.sum_of(items) for scope, items in elements.items()}


def _compaction_floor(head: int, floor: int, keep_versions: int | None, aged_out: int | None) -> int:
    candidates = [floor]
    if keep_versions is not None:
        candidates.append(head - keep_versions)
    if aged_out is not None:
        candidates.append(aged_out)
    return max(0, min(max(candidates), head))


# -- SQLite ------------------------------------------------------------------------------------------

_SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS log_head (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    version    INTEGER NOT NULL,
    hash       BLOB NOT NULL,
    floor      INTEGER NOT NULL,
    floor_hash BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS changes (
    version    INTEGER PRIMARY KEY,
    op         TEXT NOT NULL,
    key        TEXT NOT NULL,
    regions    TEXT NOT NULL,      -- JSON list of market codes this change concerns, or ["*"]
    body       BLOB NOT NULL,      -- canonical msgpack of the change as synced
    prev_hash  BLOB NOT NULL,
    hash       BLOB NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS offers (
    id      TEXT PRIMARY KEY,
    body    BLOB NOT NULL,
    version INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS models (
    version    TEXT PRIMARY KEY,
    sha256     TEXT NOT NULL,
    manifest   TEXT NOT NULL,
    created_at REAL NOT NULL,
    state      TEXT NOT NULL DEFAULT 'published'  -- published, candidate, active or retired (MODEL_STATES)
);
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS experiments (
    id      TEXT PRIMARY KEY,
    body    BLOB NOT NULL,
    version INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS state_digests (
    scope TEXT PRIMARY KEY,  -- a market code, or "*" for the global state (model, experiments)
    lanes BLOB NOT NULL      -- the scope's LtHash16 vector (digest.py)
);
CREATE TABLE IF NOT EXISTS audit_log (
    id     INTEGER PRIMARY KEY AUTOINCREMENT,
    ts     REAL NOT NULL,
    actor  TEXT,               -- "admin:<first 8 hex of sha256(token)>", or NULL when refused (no valid token)
    method TEXT NOT NULL,
    path   TEXT NOT NULL,
    target TEXT,
    peer   TEXT,
    status INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_log_ts ON audit_log (ts);
"""


def _with_model_refs(experiment: dict[str, Any], refs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The experiment as stored and synced: each variant carries the ref of its model (None: the active model)."""
    return {**experiment, "variants": [{**v, "model_ref": refs[v["model"]] if v["model"] else None}
                                       for v in experiment["variants"]]}


class SQLiteStore(ChangeLogStore):
    """The embedded default: one SQLite file (WAL, synchronous=FULL) used from worker threads under one lock.

    SQLite serialises writers itself (BEGIN IMMEDIATE); long-polls in this process are woken directly, and
    writers in other processes are noticed by the long-poll's periodic re-check.
    """

    def __init__(self, db_path: Path | str, blob_dir: Path | str) -> None:
        super().__init__()
        self.blobs = BlobStore(Path(blob_dir))
        if str(db_path) != ":memory:":
            Path(db_path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(db_path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA busy_timeout=10000")
        self._db.executescript(_SQLITE_SCHEMA)
        self._db.execute("INSERT OR IGNORE INTO log_head(id, version, hash, floor, floor_hash) VALUES (1, 0, ?, 0, ?)",
                         (GENESIS_HASH, GENESIS_HASH))
        self._migrate_model_states()
        self._lock = threading.Lock()
        self._write(self._ensure_digests)

    def _migrate_model_states(self) -> None:
        """A database made before model states has no models.state: add it. Until then every publish activated,
        so the model named active is `active` and every other one `retired`."""
        def missing() -> bool:
            return "state" not in {row[1] for row in self._db.execute("PRAGMA table_info(models)")}

        if not missing():
            return
        self._db.execute("BEGIN IMMEDIATE")  # another process may be opening the same file
        try:
            if missing():
                self._db.execute("ALTER TABLE models ADD COLUMN state TEXT NOT NULL DEFAULT 'published'")
                self._db.execute("UPDATE models SET state = CASE WHEN version = (SELECT value FROM meta WHERE "
                                 "key = 'active_model') THEN 'active' ELSE 'retired' END")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.to_thread(self._locked, fn, *args)

    def _locked(self, fn: Callable[..., T], *args: Any) -> T:
        with self._lock:
            return fn(*args)

    async def close(self) -> None:
        await self._run(self._db.close)

    def _write(self, fn: Callable[..., T], *args: Any) -> T:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            result = fn(*args)
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")
        return result

    async def _commit(self, fn: Callable[..., T], *args: Any) -> T:
        result = await self._run(self._write, fn, *args)
        self._changed()
        return result

    def _append(self, op: str, key: str, regions: list[str], fields: dict[str, Any],
                update: digest.Update | None = None) -> int:
        version, prev = self._db.execute("SELECT version, hash FROM log_head WHERE id = 1").fetchone()
        version += 1
        body, chained = _change(version, op, prev, fields)
        self._db.execute(
            "INSERT INTO changes(version, op, key, regions, body, prev_hash, hash, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (version, op, key, json.dumps(sorted(regions)), body, prev, chained, time.time()),
        )
        self._db.execute("UPDATE log_head SET version = ?, hash = ? WHERE id = 1", (version, chained))
        self._advance_digests(update, version)
        return version

    # -- the state digests (digest.py), advanced in every write's transaction
    def _vectors(self, scopes: Any = None) -> dict[str, Any]:
        rows = self._db.execute("SELECT scope, lanes FROM state_digests").fetchall()
        return {s: digest.from_bytes(bytes(b)) for s, b in rows if scopes is None or s in scopes}

    def _digests_at(self) -> int | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (DIGESTS_AT_META,)).fetchone()
        return int(row[0]) if row else None

    def _store_vectors(self, vectors: dict[str, Any], version: int) -> None:
        for scope, vector in vectors.items():
            self._db.execute("INSERT INTO state_digests(scope, lanes) VALUES (?, ?) ON CONFLICT(scope) DO UPDATE SET "
                             "lanes = excluded.lanes", (scope, vector.tobytes()))
        self._db.execute("INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = "
                         "excluded.value", (DIGESTS_AT_META, str(version)))

    def _advance_digests(self, update: digest.Update | None, version: int) -> None:
        vectors = update.apply(self._vectors(update.scopes())) if update is not None else {}
        self._store_vectors(vectors, version)

    def _ensure_digests(self) -> None:
        head = self._head()
        if self._digests_at() == head.version:
            return
        active = self._db.execute("SELECT value FROM meta WHERE key = 'active_model'").fetchone()
        offers = [unpack(body) for (body,) in self._db.execute("SELECT body FROM offers")]
        vectors = _rebuilt_vectors(offers, self._model_ref(active[0]) if active else None, self._experiments())
        self._db.execute("DELETE FROM state_digests")
        self._store_vectors(vectors, head.version)

    def _old_offer(self, offer_id: str) -> dict[str, Any] | None:
        row = self._db.execute("SELECT body FROM offers WHERE id = ?", (offer_id,)).fetchone()
        return None if row is None else unpack(row[0])

    def _active_ref(self) -> dict[str, Any] | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = 'active_model'").fetchone()
        return self._model_ref(row[0]) if row else None

    def _upsert(self, offer: dict[str, Any]) -> int:
        old = self._old_offer(offer["id"])
        update = digest.Update().replace(digest.offer_elements(old) if old else [], digest.offer_elements(offer))
        # An edge whose region the offer just left must hear about it, so tag both old and new regions.
        version = self._append(OP_OFFER_UPSERT, offer["id"], sorted(set(old["regions"] if old else ()) |
                                                                    set(offer["regions"])), {"offer": offer}, update)
        self._db.execute(
            "INSERT INTO offers(id, body, version) VALUES (?, ?, ?) "
            "ON CONFLICT(id) DO UPDATE SET body = excluded.body, version = excluded.version",
            (offer["id"], pack(offer), version),
        )
        return version

    async def upsert_offer(self, offer: dict[str, Any]) -> int:
        return await self._commit(self._upsert, offer)

    def _stored_offer(self, offer_id: str) -> dict[str, Any] | None:
        row = self._db.execute("SELECT body FROM offers WHERE id = ?", (offer_id,)).fetchone()
        return None if row is None else unpack(row[0])

    def _upsert_many(self, offers: list[dict[str, Any]]) -> tuple[int, list[str]]:
        outcomes = []
        for offer in offers:
            stored = self._stored_offer(offer["id"])
            if stored == offer:
                outcomes.append("unchanged")
                continue
            self._upsert(offer)
            outcomes.append("created" if stored is None else "changed")
        return self._head().version, outcomes

    async def upsert_offers(self, offers: list[dict[str, Any]]) -> tuple[int, list[str]]:
        return await self._commit(self._upsert_many, offers)

    def _update_offer(self, offer_id: str, update: OfferUpdate) -> tuple[int, dict[str, Any]]:
        stored = self._stored_offer(offer_id)
        if stored is None:
            raise NotFound(f"no offer {offer_id!r}")
        offer = update(stored)
        if offer != stored:
            self._upsert(offer)
        return self._head().version, offer

    async def update_offer(self, offer_id: str, update: OfferUpdate) -> tuple[int, dict[str, Any]]:
        return await self._commit(self._update_offer, offer_id, update)

    def _delete(self, offer_id: str) -> int:
        old = self._old_offer(offer_id)
        if old is None:
            raise NotFound(f"no offer {offer_id!r}")
        version = self._append(OP_OFFER_DELETE, offer_id, old["regions"], {"offer_id": offer_id},
                               digest.Update().replace(digest.offer_elements(old), []))
        self._db.execute("DELETE FROM offers WHERE id = ?", (offer_id,))
        return version

    async def delete_offer(self, offer_id: str) -> int:
        return await self._commit(self._delete, offer_id)

    def _model_ref(self, model_version: str) -> dict[str, Any]:
        row = self._db.execute("SELECT sha256, manifest FROM models WHERE version = ?", (model_version,)).fetchone()
        if row is None:
            raise NotFound(f"no model {model_version!r}")
        return {"version": model_version, "sha256": row[0], "manifest": json.loads(row[1])}

    def _activate(self, model_version: str) -> int:
        ref = self._model_ref(model_version)
        update = digest.Update().replace(digest.model_element(self._active_ref()), digest.model_element(ref))
        version = self._append(OP_MODEL_ACTIVATE, model_version, [ALL_REGIONS], {"model": ref}, update)
        self._db.execute("INSERT INTO meta(key, value) VALUES ('active_model', ?) "
                         "ON CONFLICT(key) DO UPDATE SET value = excluded.value", (model_version,))
        self._db.execute("UPDATE models SET state = ? WHERE state = ? AND version != ?",
                         (MODEL_RETIRED, MODEL_ACTIVE, model_version))
        self._db.execute("UPDATE models SET state = ? WHERE version = ?", (MODEL_ACTIVE, model_version))
        return version

    def _publish(self, manifest: dict[str, Any], sha: str, state: str) -> tuple[int, str]:
        self._db.execute("INSERT INTO models(version, sha256, manifest, created_at, state) VALUES (?, ?, ?, ?, ?) "
                         "ON CONFLICT(version) DO NOTHING",
                         (manifest["version"], sha, json.dumps(manifest), time.time(),
                          MODEL_PUBLISHED if state == MODEL_ACTIVE else state))
        row = self._db.execute("SELECT sha256, state FROM models WHERE version = ?",
                               (manifest["version"],)).fetchone()
        if row[0] != sha:
            raise ValueError(f"model version {manifest['version']!r} already exists with other bytes")
        if state == MODEL_ACTIVE:
            return self._activate(manifest["version"]), MODEL_ACTIVE
        moved = _state_after_publish(row[1], state)
        if moved is not None:
            self._db.execute("UPDATE models SET state = ? WHERE version = ?", (moved, manifest["version"]))
        return self._head().version, moved or row[1]

    async def publish_model(self, manifest: dict[str, Any], onnx_bytes: bytes, *, state: str) -> tuple[int, str]:
        if state not in PUBLISH_STATES:
            raise ValueError(f"a model is published as one of {', '.join(PUBLISH_STATES)}, not {state!r}")
        sha = await asyncio.to_thread(self.blobs.put, onnx_bytes)
        if manifest.get("sha256") != sha:
            raise ValueError(f"manifest sha256 {manifest.get('sha256')!r} does not match the model bytes ({sha})")
        return await self._commit(self._publish, manifest, sha, state)

    def _activate_unless_active(self, model_version: str) -> tuple[int, bool]:
        active = self._db.execute("SELECT value FROM meta WHERE key = 'active_model'").fetchone()
        if active is not None and active[0] == model_version:
            return self._head().version, False
        return self._activate(model_version), True

    async def activate_model(self, model_version: str) -> tuple[int, bool]:
        version, changed = await self._run(self._write, self._activate_unless_active, model_version)
        if changed:
            self._changed()
        return version, changed

    def _key_set(self) -> dict[str, Any] | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (KEY_SET_META,)).fetchone()
        return json.loads(row[0]) if row else None

    async def key_set(self) -> dict[str, Any] | None:
        return await self._run(self._key_set)

    def _update_key_set(self, update: KeySetUpdate) -> tuple[int, dict[str, Any]]:
        key_set = update(self._key_set())
        version = self._append(OP_SIGNING_KEYS, key_set["active"], [ALL_REGIONS], {"key_set": key_set})
        self._db.execute("INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = "
                         "excluded.value", (KEY_SET_META, json.dumps(key_set)))
        return version, key_set

    async def update_key_set(self, update: KeySetUpdate) -> tuple[int, dict[str, Any]]:
        return await self._commit(self._update_key_set, update)

    def _variant_model_ref(self, model_version: str) -> dict[str, Any]:
        """The ref of a model an experiment's variant names: any stored model but a merely published one."""
        ref = self._model_ref(model_version)
        (state,) = self._db.execute("SELECT state FROM models WHERE version = ?", (model_version,)).fetchone()
        if state == MODEL_PUBLISHED:
            raise _unservable(model_version)
        return ref

    def _upsert_experiment(self, experiment: dict[str, Any]) -> int:
        # The experiment itself first (an unknown or unservable model is refused), then its neighbours, as
        # PostgresStore does.
        refs = {v["model"]: self._variant_model_ref(v["model"]) for v in experiment["variants"] if v["model"]}
        check_no_overlap(experiment, self._experiments())  # in the write transaction: two PUTs cannot both pass
        body = _with_model_refs(experiment, refs)
        old = self._db.execute("SELECT body FROM experiments WHERE id = ?", (body["id"],)).fetchone()
        update = digest.Update().replace(digest.experiment_element(unpack(old[0]) if old else None),
                                         digest.experiment_element(body))
        version = self._append(OP_EXPERIMENT_UPSERT, body["id"], [ALL_REGIONS], {"experiment": body}, update)
        self._db.execute("INSERT INTO experiments(id, body, version) VALUES (?, ?, ?) ON CONFLICT(id) DO UPDATE "
                         "SET body = excluded.body, version = excluded.version", (body["id"], pack(body), version))
        return version

    async def upsert_experiment(self, experiment: dict[str, Any]) -> int:
        return await self._commit(self._upsert_experiment, experiment)

    def _delete_experiment(self, experiment_id: str) -> int:
        old = self._db.execute("SELECT body FROM experiments WHERE id = ?", (experiment_id,)).fetchone()
        if old is None:
            raise NotFound(f"no experiment {experiment_id!r}")
        version = self._append(OP_EXPERIMENT_DELETE, experiment_id, [ALL_REGIONS], {"experiment_id": experiment_id},
                               digest.Update().replace(digest.experiment_element(unpack(old[0])), []))
        self._db.execute("DELETE FROM experiments WHERE id = ?", (experiment_id,))
        return version

    async def delete_experiment(self, experiment_id: str) -> int:
        return await self._commit(self._delete_experiment, experiment_id)

    def _experiment(self, experiment_id: str) -> dict[str, Any]:
        row = self._db.execute("SELECT body FROM experiments WHERE id = ?", (experiment_id,)).fetchone()
        if row is None:
            raise NotFound(f"no experiment {experiment_id!r}")
        return unpack(row[0])

    async def experiment(self, experiment_id: str) -> dict[str, Any]:
        return await self._run(self._experiment, experiment_id)

    def _experiments(self) -> list[dict[str, Any]]:
        return [unpack(b) for (b,) in self._db.execute("SELECT body FROM experiments ORDER BY id")]

    async def experiments(self) -> list[dict[str, Any]]:
        return await self._run(self._experiments)

    def _head(self) -> LogHead:
        version, digest, floor = self._db.execute("SELECT version, hash, floor FROM log_head WHERE id = 1").fetchone()
        return LogHead(int(version), bytes(digest), int(floor))

    async def head(self) -> LogHead:
        return await self._run(self._head)

    def _offer(self, offer_id: str) -> dict[str, Any]:
        row = self._db.execute("SELECT body FROM offers WHERE id = ?", (offer_id,)).fetchone()
        if row is None:
            raise NotFound(f"no offer {offer_id!r}")
        return unpack(row[0])

    async def offer(self, offer_id: str) -> dict[str, Any]:
        return await self._run(self._offer, offer_id)

    def _models(self) -> list[dict[str, Any]]:
        rows = self._db.execute("SELECT version, sha256, created_at, state FROM models "
                                "ORDER BY created_at").fetchall()
        return [{"version": v, "sha256": s, "created_at": c, "state": state, "active": state == MODEL_ACTIVE}
                for v, s, c, state in rows]

    async def models(self) -> list[dict[str, Any]]:
        return await self._run(self._models)

    def _snapshot(self, regions: tuple[str, ...]) -> dict[str, Any]:
        # One read transaction so that the version, its hash and the rows agree.
        self._db.execute("BEGIN")
        try:
            head = self._head()
            offers = [unpack(body) for (body,) in self._db.execute("SELECT body FROM offers ORDER BY id")]
            active = self._db.execute("SELECT value FROM meta WHERE key = 'active_model'").fetchone()
            model = self._model_ref(active[0]) if active else None
            experiments = self._experiments()
            key_set = self._key_set()
        finally:
            self._db.execute("COMMIT")
        wanted = set(regions)
        return {"version": head.version, "head_hash": head.hash, "model": model, "experiments": experiments,
                "offers": [o for o in offers if wanted.intersection(o["regions"])], "signing_keys": key_set}

    async def snapshot(self, regions: tuple[str, ...]) -> dict[str, Any]:
        return await self._run(self._snapshot, regions)

    def _hash_at(self, version: int, head: LogHead, floor_hash: bytes) -> bytes:
        if version == head.floor:
            return floor_hash
        row = self._db.execute("SELECT hash FROM changes WHERE version = ?", (version,)).fetchone()
        if row is None:
            raise LookupError(f"no change {version} in the log")
        return bytes(row[0])

    def _changes_since(self, since: int, regions: tuple[str, ...], limit: int) -> DeltaPage:
        self._db.execute("BEGIN")
        try:
            head = self._head()
            if since > head.version:
                raise AheadOfOrigin(f"edge version {since} is ahead of the origin's {head.version}; take a snapshot")
            if since < head.floor:
                raise Compacted(since, head.floor)
            floor_hash = bytes(self._db.execute("SELECT floor_hash FROM log_head WHERE id = 1").fetchone()[0])
            from_hash = GENESIS_HASH if since == 0 and head.floor == 0 else self._hash_at(since, head, floor_hash)
            rows = self._db.execute(
                "SELECT version, regions, body, prev_hash, hash FROM changes WHERE version > ? "
                "ORDER BY version LIMIT ?", (since, limit)).fetchall()
            vectors, digests_at = self._vectors({*regions, ALL_REGIONS}), self._digests_at()
        finally:
            self._db.execute("COMMIT")
        wanted = set(regions) | {ALL_REGIONS}
        changes = [{"prev": bytes(prev), "body": bytes(body)}
                   for _, tags, body, prev, _ in rows if wanted.intersection(json.loads(tags))]
        if len(rows) == limit:  # a full page: the edge reaches the last row read, not the head
            to, to_hash = int(rows[-1][0]), bytes(rows[-1][4])
        else:
            to, to_hash = head.version, head.hash
        return DeltaPage(since=since, from_hash=from_hash, to=to, to_hash=to_hash, head=head.version,
                         changes=changes, state_digest=_page_digest(to, head.version, digests_at, vectors, regions))

    async def changes_since(self, since: int, regions: tuple[str, ...], limit: int = PAGE_LIMIT) -> DeltaPage:
        return await self._run(self._changes_since, since, regions, limit)

    def _compact(self, keep_versions: int | None, keep_seconds: float | None) -> int:
        head = self._head()
        aged_out = None
        if keep_seconds is not None:
            row = self._db.execute("SELECT MAX(version) FROM changes WHERE created_at < ?",
                                   (time.time() - keep_seconds,)).fetchone()
            aged_out = int(row[0]) if row and row[0] is not None else head.floor
        floor = _compaction_floor(head.version, head.floor, keep_versions, aged_out)
        if floor > head.floor:
            floor_hash = self._hash_at(floor, head, b"")
            self._db.execute("DELETE FROM changes WHERE version <= ?", (floor,))
            self._db.execute("UPDATE log_head SET floor = ?, floor_hash = ? WHERE id = 1", (floor, floor_hash))
        return floor

    async def compact(self, keep_versions: int | None = None, keep_seconds: float | None = None) -> int:
        return await self._run(self._write, self._compact, keep_versions, keep_seconds)

    def _record_audit(self, entry: dict[str, Any]) -> None:
        self._db.execute("INSERT INTO audit_log(ts, actor, method, path, target, peer, status) "
                         "VALUES (?, ?, ?, ?, ?, ?, ?)", tuple(entry.get(f) for f in AUDIT_FIELDS))

    async def record_audit(self, entry: dict[str, Any]) -> None:
        await self._run(self._record_audit, entry)

    def _audit_log(self, limit: int) -> list[dict[str, Any]]:
        rows = self._db.execute("SELECT id, ts, actor, method, path, target, peer, status FROM audit_log "
                                "ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
        return [dict(zip(("id", *AUDIT_FIELDS), row)) for row in rows]

    async def audit_log(self, limit: int = 100) -> list[dict[str, Any]]:
        return await self._run(self._audit_log, limit)

    async def purge_audit(self, before_ts: float) -> int:
        return await self._run(lambda: self._db.execute("DELETE FROM audit_log WHERE ts < ?", (before_ts,)).rowcount)

    async def blob_path(self, sha256: str) -> Path:
        path = self.blobs.path(sha256)
        if not path.exists():
            raise NotFound(f"no blob {sha256}")
        return path

    def _verify_chain(self) -> LogHead:
        head = self._head()
        floor_hash = bytes(self._db.execute("SELECT floor_hash FROM log_head WHERE id = 1").fetchone()[0])
        expected_version, digest = head.floor, floor_hash
        for version, body, prev, stored in self._db.execute(
                "SELECT version, body, prev_hash, hash FROM changes ORDER BY version"):
            if version != expected_version + 1 or bytes(prev) != digest:
                raise ValueError(f"chain broken at version {version}")
            digest = chain_hash(bytes(prev), bytes(body))
            if digest != bytes(stored):
                raise ValueError(f"hash mismatch at version {version}")
            expected_version = version
        if expected_version != head.version or digest != head.hash:
            raise ValueError("the log head does not match the last change")
        return head

    async def verify_chain(self) -> LogHead:
        return await self._run(self._verify_chain)


# -- PostgreSQL --------------------------------------------------------------------------------------

_PG_SCHEMA = """
CREATE TABLE IF NOT EXISTS log_head (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    version    BIGINT NOT NULL,
    hash       BYTEA NOT NULL,
    floor      BIGINT NOT NULL,
    floor_hash BYTEA NOT NULL
);
INSERT INTO log_head(id, version, hash, floor, floor_hash) VALUES (1, 0, $1, 0, $1) ON CONFLICT (id) DO NOTHING;
CREATE TABLE IF NOT EXISTS changes (
    version    BIGINT PRIMARY KEY,
    op         TEXT NOT NULL,
    key        TEXT NOT NULL,
    regions    TEXT[] NOT NULL,
    body       BYTEA NOT NULL,
    prev_hash  BYTEA NOT NULL,
    hash       BYTEA NOT NULL,
    created_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX IF NOT EXISTS changes_created_at ON changes (created_at);
CREATE TABLE IF NOT EXISTS offers (
    id      TEXT PRIMARY KEY,
    body    BYTEA NOT NULL,
    regions TEXT[] NOT NULL,
    version BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS models (
    version    TEXT PRIMARY KEY,
    sha256     TEXT NOT NULL,
    manifest   TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    state      TEXT NOT NULL DEFAULT 'published'
);
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS blobs (
    sha256 TEXT PRIMARY KEY,
    data   BYTEA NOT NULL
);
CREATE TABLE IF NOT EXISTS experiments (
    id      TEXT PRIMARY KEY,
    body    BYTEA NOT NULL,
    version BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS state_digests (
    scope TEXT PRIMARY KEY,
    lanes BYTEA NOT NULL
);
CREATE TABLE IF NOT EXISTS audit_log (
    id     BIGSERIAL PRIMARY KEY,
    ts     DOUBLE PRECISION NOT NULL,
    actor  TEXT,
    method TEXT NOT NULL,
    path   TEXT NOT NULL,
    target TEXT,
    peer   TEXT,
    status INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_log_ts ON audit_log (ts);
"""
_SCHEMA_LOCK = 0x6564676572656331  # pg_advisory_xact_lock key: "edgerec1"
# A database made before model states: models.state added; every publish activated until then, so the model named
# active is `active` and every other one `retired`. Run (under the schema lock) only while the column is missing.
_PG_MODEL_STATES_MIGRATION = (
    "ALTER TABLE models ADD COLUMN IF NOT EXISTS state TEXT",
    "UPDATE models SET state = CASE WHEN version = (SELECT value FROM meta WHERE key = 'active_model') "
    "THEN 'active' ELSE 'retired' END WHERE state IS NULL",
    "ALTER TABLE models ALTER COLUMN state SET DEFAULT 'published', ALTER COLUMN state SET NOT NULL",
)


async def _migrate_pg_model_states(conn: Any) -> None:
    nullable = await conn.fetchval("SELECT is_nullable FROM information_schema.columns WHERE table_schema = "
                                   "current_schema() AND table_name = 'models' AND column_name = 'state'")
    if nullable is None or nullable == "YES":
        for statement in _PG_MODEL_STATES_MIGRATION:
            await conn.execute(statement)


class PostgresStore(ChangeLogStore):
    """The production store (asyncpg pool). Several origin processes may share one database.

    Gapless versions: every write increments the single `log_head` row inside its transaction, so writers
    are serialised on that row lock and commit in version order. Long-polls in every process are woken by
    LISTEN/NOTIFY. Model blobs live in the database too, cached on local disk under `blob_dir`.
    """

    def __init__(self, dsn: str, blob_dir: Path | str, schema: str | None = None,
                 min_size: int = 1, max_size: int = 10) -> None:
        super().__init__()
        self.dsn = dsn
        self.schema = schema
        self.blobs = BlobStore(Path(blob_dir))
        self._pool_args = {"min_size": min_size, "max_size": max_size}
        self._pool: Any = None
        self._listen_conn: Any = None
        self.channel = f"edgerec_changes_{schema}" if schema else "edgerec_changes"

    async def open(self) -> None:
        import asyncpg

        settings = {"search_path": self.schema} if self.schema else {}
        self._pool = await asyncpg.create_pool(self.dsn, server_settings=settings, **self._pool_args)
        async with self._pool.acquire() as conn, conn.transaction():
            # Several origins may start at once: only one creates the schema.
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _SCHEMA_LOCK)
            for statement in (s.strip() for s in _PG_SCHEMA.split(";")):
                if statement:
                    await conn.execute(statement, *([GENESIS_HASH] if "$1" in statement else []))
            await _migrate_pg_model_states(conn)
            await self._ensure_digests(conn)
        self._listen_conn = await asyncpg.connect(self.dsn, server_settings=settings)
        await self._listen_conn.add_listener(self.channel, lambda *_: self._changed())

    async def close(self) -> None:
        if self._listen_conn is not None:
            await self._listen_conn.close()
        if self._pool is not None:
            await self._pool.close()

    async def _append(self, conn: Any, op: str, key: str, regions: list[str], fields: dict[str, Any],
                      update: digest.Update | None = None) -> int:
        # The row lock taken here is what serialises writers across processes.
        row = await conn.fetchrow("UPDATE log_head SET version = version + 1 WHERE id = 1 RETURNING version, hash")
        version, prev = int(row["version"]), bytes(row["hash"])
        body, chained = _change(version, op, prev, fields)
        await conn.execute("INSERT INTO changes(version, op, key, regions, body, prev_hash, hash, created_at) "
                           "VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                           version, op, key, sorted(regions), body, prev, chained, time.time())
        await conn.execute("UPDATE log_head SET hash = $1 WHERE id = 1", chained)
        await self._advance_digests(conn, update, version)
        await conn.execute("SELECT pg_notify($1, $2)", self.channel, str(version))
        return version

    # -- the state digests (digest.py), advanced in every write's transaction
    async def _vectors(self, conn: Any, scopes: Any = None) -> dict[str, Any]:
        rows = await conn.fetch("SELECT scope, lanes FROM state_digests")
        return {r["scope"]: digest.from_bytes(bytes(r["lanes"])) for r in rows if scopes is None or r["scope"] in scopes}

    async def _digests_at(self, conn: Any) -> int | None:
        value = await conn.fetchval("SELECT value FROM meta WHERE key = $1", DIGESTS_AT_META)
        return None if value is None else int(value)

    async def _store_vectors(self, conn: Any, vectors: dict[str, Any], version: int) -> None:
        for scope, vector in vectors.items():
            await conn.execute("INSERT INTO state_digests(scope, lanes) VALUES ($1, $2) ON CONFLICT (scope) DO UPDATE "
                               "SET lanes = excluded.lanes", scope, vector.tobytes())
        await conn.execute("INSERT INTO meta(key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = "
                           "excluded.value", DIGESTS_AT_META, str(version))

    async def _advance_digests(self, conn: Any, update: digest.Update | None, version: int) -> None:
        vectors = update.apply(await self._vectors(conn, update.scopes())) if update is not None else {}
        await self._store_vectors(conn, vectors, version)

    async def _active_ref(self, conn: Any) -> dict[str, Any] | None:
        active = await conn.fetchval("SELECT value FROM meta WHERE key = 'active_model'")
        return await self._model_ref(conn, active) if active else None

    async def _ensure_digests(self, conn: Any) -> None:
        # The log row lock: no other origin writes while the vectors are rebuilt from the whole state.
        head = int(await conn.fetchval("SELECT version FROM log_head WHERE id = 1 FOR UPDATE"))
        if await self._digests_at(conn) == head:
            return
        offers = [unpack(r["body"]) for r in await conn.fetch("SELECT body FROM offers")]
        experiments = [unpack(r["body"]) for r in await conn.fetch("SELECT body FROM experiments")]
        vectors = _rebuilt_vectors(offers, await self._active_ref(conn), experiments)
        await conn.execute("DELETE FROM state_digests")
        await self._store_vectors(conn, vectors, head)

    async def _in_transaction(self, fn: Callable[..., Any], *args: Any) -> Any:
        async with self._pool.acquire() as conn, conn.transaction():
            # Take the log's row lock first: writers then see each other's committed rows (READ COMMITTED).
            await conn.execute("SELECT 1 FROM log_head WHERE id = 1 FOR UPDATE")
            result = await fn(conn, *args)
        self._changed()
        return result

    async def upsert_offer(self, offer: dict[str, Any]) -> int:
        async def write(conn: Any) -> int:
            return await self._upsert_in(conn, offer, await self._stored_offer(conn, offer["id"]))
        return await self._in_transaction(write)

    async def _upsert_in(self, conn: Any, offer: dict[str, Any], old: dict[str, Any] | None) -> int:
        update = digest.Update().replace(digest.offer_elements(old) if old else [], digest.offer_elements(offer))
        # An edge whose region the offer just left must hear about it, so tag both old and new regions.
        version = await self._append(conn, OP_OFFER_UPSERT, offer["id"],
                                     sorted(set(old["regions"] if old else ()) | set(offer["regions"])),
                                     {"offer": offer}, update)
        await conn.execute("INSERT INTO offers(id, body, regions, version) VALUES ($1, $2, $3, $4) "
                           "ON CONFLICT (id) DO UPDATE SET body = excluded.body, regions = excluded.regions, "
                           "version = excluded.version", offer["id"], pack(offer), offer["regions"], version)
        return version

    async def _stored_offer(self, conn: Any, offer_id: str) -> dict[str, Any] | None:
        body = await conn.fetchval("SELECT body FROM offers WHERE id = $1", offer_id)
        return None if body is None else unpack(body)

    async def _append_many(self, conn: Any, entries: list[tuple[str, str, list[str], dict[str, Any]]],
                           update: digest.Update) -> list[int]:
        """`_append` for many changes (op, key, regions, fields) at once, in a few round trips: the versions are
        taken with one update of the log head row (its lock serialises writers, as in `_append`), the chain is
        computed here, the rows go in one executemany, and one notification wakes the long-polls."""
        if not entries:
            return []
        row = await conn.fetchrow("UPDATE log_head SET version = version + $1 WHERE id = 1 RETURNING version, hash",
                                  len(entries))
        first, prev = int(row["version"]) - len(entries) + 1, bytes(row["hash"])
        rows, now = [], time.time()
        for version, (op, key, regions, fields) in enumerate(entries, start=first):
            body, chained = _change(version, op, prev, fields)
            rows.append((version, op, key, sorted(regions), body, prev, chained, now))
            prev = chained
        await conn.executemany("INSERT INTO changes(version, op, key, regions, body, prev_hash, hash, created_at) "
                               "VALUES ($1, $2, $3, $4, $5, $6, $7, $8)", rows)
        await conn.execute("UPDATE log_head SET hash = $1 WHERE id = 1", prev)
        await self._advance_digests(conn, update, rows[-1][0])  # the batch's changes, summed into the vectors
        await conn.execute("SELECT pg_notify($1, $2)", self.channel, str(rows[-1][0]))
        return [r[0] for r in rows]

    async def upsert_offers(self, offers: list[dict[str, Any]]) -> tuple[int, list[str]]:
        async def write(conn: Any) -> tuple[int, list[str]]:
            rows = await conn.fetch("SELECT id, body FROM offers WHERE id = ANY($1::text[])",
                                    sorted({o["id"] for o in offers}))
            stored = {r["id"]: unpack(r["body"]) for r in rows}
            outcomes, writes, update = [], [], digest.Update()
            for offer in offers:  # in order: an id twice in a batch is written twice, the last one last
                old = stored.get(offer["id"])
                if old == offer:
                    outcomes.append("unchanged")
                    continue
                outcomes.append("created" if old is None else "changed")
                writes.append((offer, old["regions"] if old else []))
                update.replace(digest.offer_elements(old) if old else [], digest.offer_elements(offer))
                stored[offer["id"]] = offer
            versions = await self._append_many(conn, [
                (OP_OFFER_UPSERT, o["id"], sorted(set(old) | set(o["regions"])), {"offer": o}) for o, old in writes],
                update)
            await conn.executemany("INSERT INTO offers(id, body, regions, version) VALUES ($1, $2, $3, $4) "
                                   "ON CONFLICT (id) DO UPDATE SET body = excluded.body, regions = excluded.regions, "
                                   "version = excluded.version",
                                   [(o["id"], pack(o), o["regions"], v) for (o, _), v in zip(writes, versions)])
            return int(await conn.fetchval("SELECT version FROM log_head WHERE id = 1")), outcomes
        return await self._in_transaction(write)

    async def update_offer(self, offer_id: str, update: OfferUpdate) -> tuple[int, dict[str, Any]]:
        async def write(conn: Any) -> tuple[int, dict[str, Any]]:
            stored = await self._stored_offer(conn, offer_id)
            if stored is None:
                raise NotFound(f"no offer {offer_id!r}")
            offer = update(stored)
            if offer != stored:
                await self._upsert_in(conn, offer, stored)
            return int(await conn.fetchval("SELECT version FROM log_head WHERE id = 1")), offer
        return await self._in_transaction(write)

    async def delete_offer(self, offer_id: str) -> int:
        async def write(conn: Any) -> int:
            body = await conn.fetchval("SELECT body FROM offers WHERE id = $1", offer_id)
            if body is None:
                raise NotFound(f"no offer {offer_id!r}")
            old = unpack(body)
            version = await self._append(conn, OP_OFFER_DELETE, offer_id, list(old["regions"]), {"offer_id": offer_id},
                                         digest.Update().replace(digest.offer_elements(old), []))
            await conn.execute("DELETE FROM offers WHERE id = $1", offer_id)
            return version
        return await self._in_transaction(write)

    async def _model_ref(self, conn: Any, model_version: str) -> dict[str, Any]:
        row = await conn.fetchrow("SELECT sha256, manifest FROM models WHERE version = $1", model_version)
        if row is None:
            raise NotFound(f"no model {model_version!r}")
        return {"version": model_version, "sha256": row["sha256"], "manifest": json.loads(row["manifest"])}

    async def _activate(self, conn: Any, model_version: str) -> int:
        ref = await self._model_ref(conn, model_version)
        update = digest.Update().replace(digest.model_element(await self._active_ref(conn)), digest.model_element(ref))
        version = await self._append(conn, OP_MODEL_ACTIVATE, model_version, [ALL_REGIONS], {"model": ref}, update)
        await conn.execute("INSERT INTO meta(key, value) VALUES ('active_model', $1) "
                           "ON CONFLICT (key) DO UPDATE SET value = excluded.value", model_version)
        await conn.execute("UPDATE models SET state = $1 WHERE state = $2 AND version <> $3",
                           MODEL_RETIRED, MODEL_ACTIVE, model_version)
        await conn.execute("UPDATE models SET state = $1 WHERE version = $2", MODEL_ACTIVE, model_version)
        return version

    async def publish_model(self, manifest: dict[str, Any], onnx_bytes: bytes, *, state: str) -> tuple[int, str]:
        if state not in PUBLISH_STATES:
            raise ValueError(f"a model is published as one of {', '.join(PUBLISH_STATES)}, not {state!r}")
        sha = await asyncio.to_thread(self.blobs.put, onnx_bytes)
        if manifest.get("sha256") != sha:
            raise ValueError(f"manifest sha256 {manifest.get('sha256')!r} does not match the model bytes ({sha})")

        async def write(conn: Any) -> tuple[int, str]:
            await conn.execute("INSERT INTO blobs(sha256, data) VALUES ($1, $2) ON CONFLICT (sha256) DO NOTHING",
                               sha, onnx_bytes)
            await conn.execute("INSERT INTO models(version, sha256, manifest, created_at, state) "
                               "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (version) DO NOTHING",
                               manifest["version"], sha, json.dumps(manifest), time.time(),
                               MODEL_PUBLISHED if state == MODEL_ACTIVE else state)
            stored = await conn.fetchrow("SELECT sha256, state FROM models WHERE version = $1", manifest["version"])
            if stored["sha256"] != sha:
                raise ValueError(f"model version {manifest['version']!r} already exists with other bytes")
            if state == MODEL_ACTIVE:
                return await self._activate(conn, manifest["version"]), MODEL_ACTIVE
            moved = _state_after_publish(stored["state"], state)
            if moved is not None:
                await conn.execute("UPDATE models SET state = $1 WHERE version = $2", moved, manifest["version"])
            return int(await conn.fetchval("SELECT version FROM log_head WHERE id = 1")), moved or stored["state"]
        return await self._in_transaction(write)

    async def activate_model(self, model_version: str) -> tuple[int, bool]:
        async def write(conn: Any) -> tuple[int, bool]:
            # Under the log_head row lock (_in_transaction): a concurrent activation commits before or after this.
            if await conn.fetchval("SELECT value FROM meta WHERE key = 'active_model'") == model_version:
                return int(await conn.fetchval("SELECT version FROM log_head WHERE id = 1")), False
            return await self._activate(conn, model_version), True
        return await self._in_transaction(write)

    async def key_set(self) -> dict[str, Any] | None:
        value = await self._pool.fetchval("SELECT value FROM meta WHERE key = $1", KEY_SET_META)
        return json.loads(value) if value else None

    async def update_key_set(self, update: KeySetUpdate) -> tuple[int, dict[str, Any]]:
        async def write(conn: Any) -> tuple[int, dict[str, Any]]:
            current = await conn.fetchval("SELECT value FROM meta WHERE key = $1", KEY_SET_META)
            key_set = update(json.loads(current) if current else None)
            version = await self._append(conn, OP_SIGNING_KEYS, key_set["active"], [ALL_REGIONS], {"key_set": key_set})
            await conn.execute("INSERT INTO meta(key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = "
                               "excluded.value", KEY_SET_META, json.dumps(key_set))
            return version, key_set
        return await self._in_transaction(write)

    async def _variant_model_ref(self, conn: Any, model_version: str) -> dict[str, Any]:
        """The ref of a model an experiment's variant names: any stored model but a merely published one."""
        ref = await self._model_ref(conn, model_version)
        if await conn.fetchval("SELECT state FROM models WHERE version = $1", model_version) == MODEL_PUBLISHED:
            raise _unservable(model_version)
        return ref

    async def upsert_experiment(self, experiment: dict[str, Any]) -> int:
        async def write(conn: Any) -> int:
            refs = {v["model"]: await self._variant_model_ref(conn, v["model"])
                    for v in experiment["variants"] if v["model"]}
            body = _with_model_refs(experiment, refs)
            old = await conn.fetchval("SELECT body FROM experiments WHERE id = $1", body["id"])
            update = digest.Update().replace(digest.experiment_element(unpack(old) if old is not None else None),
                                             digest.experiment_element(body))
            version = await self._append(conn, OP_EXPERIMENT_UPSERT, body["id"], [ALL_REGIONS], {"experiment": body},
                                         update)
            # After the append, which holds the log_head row lock until commit: a concurrent PUT waits for it and
            # then reads this transaction's experiments, so two overlapping experiments cannot both pass.
            others = [unpack(r["body"]) for r in await conn.fetch("SELECT body FROM experiments")]
            check_no_overlap(body, others)
            await conn.execute("INSERT INTO experiments(id, body, version) VALUES ($1, $2, $3) ON CONFLICT (id) "
                               "DO UPDATE SET body = excluded.body, version = excluded.version",
                               body["id"], pack(body), version)
            return version
        return await self._in_transaction(write)

    async def delete_experiment(self, experiment_id: str) -> int:
        async def write(conn: Any) -> int:
            old = await conn.fetchval("SELECT body FROM experiments WHERE id = $1", experiment_id)
            if old is None:
                raise NotFound(f"no experiment {experiment_id!r}")
            version = await self._append(conn, OP_EXPERIMENT_DELETE, experiment_id, [ALL_REGIONS],
                                         {"experiment_id": experiment_id},
                                         digest.Update().replace(digest.experiment_element(unpack(old)), []))
            await conn.execute("DELETE FROM experiments WHERE id = $1", experiment_id)
            return version
        return await self._in_transaction(write)

    async def experiment(self, experiment_id: str) -> dict[str, Any]:
        body = await self._pool.fetchval("SELECT body FROM experiments WHERE id = $1", experiment_id)
        if body is None:
            raise NotFound(f"no experiment {experiment_id!r}")
        return unpack(body)

    async def experiments(self) -> list[dict[str, Any]]:
        return [unpack(r["body"]) for r in await self._pool.fetch("SELECT body FROM experiments ORDER BY id")]

    async def head(self) -> LogHead:
        row = await self._pool.fetchrow("SELECT version, hash, floor FROM log_head WHERE id = 1")
        return LogHead(int(row["version"]), bytes(row["hash"]), int(row["floor"]))

    async def offer(self, offer_id: str) -> dict[str, Any]:
        body = await self._pool.fetchval("SELECT body FROM offers WHERE id = $1", offer_id)
        if body is None:
            raise NotFound(f"no offer {offer_id!r}")
        return unpack(body)

    async def models(self) -> list[dict[str, Any]]:
        rows = await self._pool.fetch("SELECT version, sha256, created_at, state FROM models ORDER BY created_at")
        return [{"version": r["version"], "sha256": r["sha256"], "created_at": r["created_at"], "state": r["state"],
                 "active": r["state"] == MODEL_ACTIVE} for r in rows]

    async def snapshot(self, regions: tuple[str, ...]) -> dict[str, Any]:
        async with self._pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            head = await conn.fetchrow("SELECT version, hash FROM log_head WHERE id = 1")
            bodies = await conn.fetch("SELECT body FROM offers WHERE regions && $1::text[] ORDER BY id", list(regions))
            active = await conn.fetchval("SELECT value FROM meta WHERE key = 'active_model'")
            model = await self._model_ref(conn, active) if active else None
            experiments = [unpack(r["body"]) for r in await conn.fetch("SELECT body FROM experiments ORDER BY id")]
            key_set = await conn.fetchval("SELECT value FROM meta WHERE key = $1", KEY_SET_META)
        return {"version": int(head["version"]), "head_hash": bytes(head["hash"]), "model": model,
                "experiments": experiments, "offers": [unpack(r["body"]) for r in bodies],
                "signing_keys": json.loads(key_set) if key_set else None}

    async def changes_since(self, since: int, regions: tuple[str, ...], limit: int = PAGE_LIMIT) -> DeltaPage:
        async with self._pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            head = await conn.fetchrow("SELECT version, hash, floor, floor_hash FROM log_head WHERE id = 1")
            version, floor = int(head["version"]), int(head["floor"])
            if since > version:
                raise AheadOfOrigin(f"edge version {since} is ahead of the origin's {version}; take a snapshot")
            if since < floor:
                raise Compacted(since, floor)
            if since == floor:
                from_hash = bytes(head["floor_hash"])
            else:
                from_hash = bytes(await conn.fetchval("SELECT hash FROM changes WHERE version = $1", since))
            # Read the page of all changes (cheap columns), then the bodies of those that concern the regions.
            rows = await conn.fetch(
                "SELECT version, hash, regions && $3::text[] AS wanted, "
                "CASE WHEN regions && $3::text[] THEN body END AS body, prev_hash "
                "FROM changes WHERE version > $1 ORDER BY version LIMIT $2",
                since, limit, [*regions, ALL_REGIONS])
            vectors, digests_at = await self._vectors(conn, {*regions, ALL_REGIONS}), await self._digests_at(conn)
        changes = [{"prev": bytes(r["prev_hash"]), "body": bytes(r["body"])} for r in rows if r["wanted"]]
        if len(rows) == limit:
            to, to_hash = int(rows[-1]["version"]), bytes(rows[-1]["hash"])
        else:
            to, to_hash = version, bytes(head["hash"])
        return DeltaPage(since=since, from_hash=from_hash, to=to, to_hash=to_hash, head=version, changes=changes,
                         state_digest=_page_digest(to, version, digests_at, vectors, regions))

    async def compact(self, keep_versions: int | None = None, keep_seconds: float | None = None) -> int:
        async with self._pool.acquire() as conn, conn.transaction():
            head = await conn.fetchrow("SELECT version, floor FROM log_head WHERE id = 1 FOR UPDATE")
            version, floor = int(head["version"]), int(head["floor"])
            aged_out = None
            if keep_seconds is not None:
                aged_out = await conn.fetchval("SELECT MAX(version) FROM changes WHERE created_at < $1",
                                               time.time() - keep_seconds)
                aged_out = floor if aged_out is None else int(aged_out)
            new_floor = _compaction_floor(version, floor, keep_versions, aged_out)
            if new_floor > floor:
                floor_hash = await conn.fetchval("SELECT hash FROM changes WHERE version = $1", new_floor)
                await conn.execute("DELETE FROM changes WHERE version <= $1", new_floor)
                await conn.execute("UPDATE log_head SET floor = $1, floor_hash = $2 WHERE id = 1",
                                   new_floor, floor_hash)
        return new_floor

    async def record_audit(self, entry: dict[str, Any]) -> None:
        await self._pool.execute("INSERT INTO audit_log(ts, actor, method, path, target, peer, status) "
                                 "VALUES ($1, $2, $3, $4, $5, $6, $7)", *(entry.get(f) for f in AUDIT_FIELDS))

    async def audit_log(self, limit: int = 100) -> list[dict[str, Any]]:
        rows = await self._pool.fetch("SELECT id, ts, actor, method, path, target, peer, status FROM audit_log "
                                      "ORDER BY id DESC LIMIT $1", limit)
        return [dict(r) for r in rows]

    async def purge_audit(self, before_ts: float) -> int:
        result = await self._pool.execute("DELETE FROM audit_log WHERE ts < $1", before_ts)
        return int(result.split()[-1])

    async def blob_path(self, sha256: str) -> Path:
        path = self.blobs.path(sha256)
        if path.exists():
            return path
        data = await self._pool.fetchval("SELECT data FROM blobs WHERE sha256 = $1", sha256)
        if data is None:
            raise NotFound(f"no blob {sha256}")
        await asyncio.to_thread(write_atomically, path, bytes(data))
        return path

    async def verify_chain(self) -> LogHead:
        async with self._pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            head = await conn.fetchrow("SELECT version, hash, floor, floor_hash FROM log_head WHERE id = 1")
            rows = await conn.fetch("SELECT version, body, prev_hash, hash FROM changes ORDER BY version")
        expected, digest = int(head["floor"]), bytes(head["floor_hash"])
        for r in rows:
            if r["version"] != expected + 1 or bytes(r["prev_hash"]) != digest:
                raise ValueError(f"chain broken at version {r['version']}")
            digest = chain_hash(digest, bytes(r["body"]))
            if digest != bytes(r["hash"]):
                raise ValueError(f"hash mismatch at version {r['version']}")
            expected = int(r["version"])
        if expected != int(head["version"]) or digest != bytes(head["hash"]):
            raise ValueError("the log head does not match the last change")
        return LogHead(int(head["version"]), bytes(head["hash"]), int(head["floor"]))


def open_store(dsn: str | None, db_path: Path | str, blob_dir: Path | str) -> ChangeLogStore:
    """PostgreSQL when a DSN is given, else the SQLite file. Call `await store.open()` before use."""
    if dsn:
        return PostgresStore(dsn, blob_dir)
    return SQLiteStore(db_path, blob_dir)
