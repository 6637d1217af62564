"""The origin's source of truth: offers, models and an append-only change log with a monotonic version (SQLite)."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from .protocol import (
    ALL_REGIONS,
    OP_MODEL_ACTIVATE,
    OP_OFFER_DELETE,
    OP_OFFER_UPSERT,
    pack,
    unpack,
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS changes (
    version    INTEGER PRIMARY KEY AUTOINCREMENT,
    op         TEXT NOT NULL,
    key        TEXT NOT NULL,
    regions    TEXT NOT NULL,      -- JSON list of market codes this change concerns, or ["*"]
    body       BLOB NOT NULL,      -- msgpack of the change as synced
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
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""


class NotFound(LookupError):
    """The named offer or model does not exist at the origin."""


def write_atomically(path: Path, data: bytes) -> None:
    """Write a file so that readers see either the old or the whole new content (temp file, fsync, rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class BlobStore:
    """Content-addressed files (model bundles): the name is the sha256 of the bytes."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, sha256: str) -> Path:
        if len(sha256) != 64 or not all(c in "0123456789abcdef" for c in sha256):
            raise NotFound(f"not a sha256: {sha256!r}")
        return self.root / sha256

    def put(self, data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        target = self.path(digest)
        if not target.exists():
            write_atomically(target, data)
        return digest

    def get(self, sha256: str) -> bytes:
        target = self.path(sha256)
        if not target.exists():
            raise NotFound(f"no blob {sha256}")
        return target.read_bytes()


class ChangeLogStore:
    """Offers and models with every change appended to one log; the log's last version is the data version.

    SQLite serialises writers; a lock keeps this one connection safe across the server's worker threads.
    """

    def __init__(self, db_path: Path | str, blob_dir: Path | str) -> None:
        self.blobs = BlobStore(Path(blob_dir))
        if str(db_path) != ":memory:":
            Path(db_path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(db_path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- writes --------------------------------------------------------------------------------

    def _append(self, op: str, key: str, regions: list[str], change: dict[str, Any]) -> int:
        cur = self._db.execute(
            "INSERT INTO changes(op, key, regions, body, created_at) VALUES (?, ?, ?, ?, ?)",
            (op, key, json.dumps(sorted(regions)), b"", time.time()),
        )
        version = int(cur.lastrowid)
        change = {"version": version, "op": op, **change}
        self._db.execute("UPDATE changes SET body = ? WHERE version = ?", (pack(change), version))
        return version

    def _old_regions(self, offer_id: str) -> list[str] | None:
        row = self._db.execute("SELECT body FROM offers WHERE id = ?", (offer_id,)).fetchone()
        return None if row is None else unpack(row[0])["regions"]

    def upsert_offer(self, offer: dict[str, Any]) -> int:
        """Store a validated offer; returns the new data version."""
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            old = self._old_regions(offer["id"]) or []
            # An edge whose region the offer just left must hear about it, so tag both old and new regions.
            version = self._append(OP_OFFER_UPSERT, offer["id"], sorted(set(old) | set(offer["regions"])),
                                   {"offer": offer})
            self._db.execute(
                "INSERT INTO offers(id, body, version) VALUES (?, ?, ?) "
                "ON CONFLICT(id) DO UPDATE SET body = excluded.body, version = excluded.version",
                (offer["id"], pack(offer), version),
            )
            return version

    def delete_offer(self, offer_id: str) -> int:
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            old = self._old_regions(offer_id)
            if old is None:
                raise NotFound(f"no offer {offer_id!r}")
            version = self._append(OP_OFFER_DELETE, offer_id, old, {"offer_id": offer_id})
            self._db.execute("DELETE FROM offers WHERE id = ?", (offer_id,))
            return version

    def publish_model(self, manifest: dict[str, Any], onnx_bytes: bytes) -> int:
        """Store a bundle's blob and manifest and make it the active model; returns the new data version."""
        sha = self.blobs.put(onnx_bytes)
        if manifest.get("sha256") != sha:
            raise ValueError(f"manifest sha256 {manifest.get('sha256')!r} does not match the model bytes ({sha})")
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute(
                "INSERT INTO models(version, sha256, manifest, created_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(version) DO NOTHING",
                (manifest["version"], sha, json.dumps(manifest), time.time()),
            )
            row = self._db.execute("SELECT sha256 FROM models WHERE version = ?", (manifest["version"],)).fetchone()
            if row[0] != sha:
                raise ValueError(f"model version {manifest['version']!r} already exists with other bytes")
            return self._activate_locked(manifest["version"])

    def activate_model(self, model_version: str) -> int:
        """Make an already published model active again (rollback); returns the new data version."""
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            return self._activate_locked(model_version)

    def _activate_locked(self, model_version: str) -> int:
        ref = self._model_ref(model_version)
        version = self._append(OP_MODEL_ACTIVATE, model_version, [ALL_REGIONS], {"model": ref})
        self._db.execute(
            "INSERT INTO meta(key, value) VALUES ('active_model', ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (model_version,),
        )
        return version

    # -- reads ---------------------------------------------------------------------------------

    def _model_ref(self, model_version: str) -> dict[str, Any]:
        row = self._db.execute(
            "SELECT sha256, manifest FROM models WHERE version = ?", (model_version,)
        ).fetchone()
        if row is None:
            raise NotFound(f"no model {model_version!r}")
        return {"version": model_version, "sha256": row[0], "manifest": json.loads(row[1])}

    def head_version(self) -> int:
        with self._lock:
            row = self._db.execute("SELECT COALESCE(MAX(version), 0) FROM changes").fetchone()
            return int(row[0])

    def offer(self, offer_id: str) -> dict[str, Any]:
        with self._lock:
            row = self._db.execute("SELECT body FROM offers WHERE id = ?", (offer_id,)).fetchone()
        if row is None:
            raise NotFound(f"no offer {offer_id!r}")
        return unpack(row[0])

    def models(self) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute("SELECT version, sha256, created_at FROM models ORDER BY created_at").fetchall()
            active = self._db.execute("SELECT value FROM meta WHERE key = 'active_model'").fetchone()
        active_version = active[0] if active else None
        return [
            {"version": v, "sha256": s, "created_at": c, "active": v == active_version} for v, s, c in rows
        ]

    def snapshot(self, regions: tuple[str, ...]) -> dict[str, Any]:
        """The full state an edge serving `regions` needs, consistent at one version."""
        with self._lock:
            # One read transaction so that the version and the rows agree.
            self._db.execute("BEGIN")
            try:
                version = int(self._db.execute("SELECT COALESCE(MAX(version), 0) FROM changes").fetchone()[0])
                offers = [unpack(body) for (body,) in self._db.execute("SELECT body FROM offers ORDER BY id")]
                active = self._db.execute("SELECT value FROM meta WHERE key = 'active_model'").fetchone()
                model = self._model_ref(active[0]) if active else None
            finally:
                self._db.execute("COMMIT")
        offers = [o for o in offers if any(r in o["regions"] for r in regions)]
        return {"version": version, "offers": offers, "model": model}

    def changes_since(self, since: int, regions: tuple[str, ...], limit: int = 10_000) -> tuple[list[dict], int]:
        """Changes after `since` that concern `regions`, oldest first, and the version they bring the edge to."""
        with self._lock:
            rows = self._db.execute(
                "SELECT version, regions, body FROM changes WHERE version > ? ORDER BY version LIMIT ?",
                (since, limit),
            ).fetchall()
            head = int(self._db.execute("SELECT COALESCE(MAX(version), 0) FROM changes").fetchone()[0])
        wanted = set(regions) | {ALL_REGIONS}
        changes = [unpack(body) for _, tags, body in rows if wanted & set(json.loads(tags))]
        # When the page is full the edge has reached the last row read, not the head.
        reached = int(rows[-1][0]) if len(rows) == limit else head
        return changes, max(reached, since)
