"""Model blobs, content-addressed: on the origin's disk, and where the engine says so also in the database, from
which an origin that has no copy on disk yet fetches it."""

from __future__ import annotations

import asyncio
from pathlib import Path

from edgerec.core.files import BlobStore, NotFound, write_atomically
from origin_sync.origin.store.dialect import Connection, Engine


async def put_in_database(conn: Connection, sha256: str, data: bytes) -> None:
    if conn.blobs_in_database:
        await conn.execute(
            "INSERT INTO blobs(sha256, data) VALUES ($1, $2) ON CONFLICT (sha256) DO NOTHING", sha256, data
        )


async def blob_path(engine: Engine, disk: BlobStore, sha256: str) -> Path:
    """A local file holding the blob (NotFound if there is no such blob)."""
    path = disk.path(sha256)
    if path.exists():
        return path

    async def stored(conn: Connection) -> bytes | None:
        if not conn.blobs_in_database:
            return None
        data = await conn.fetchval("SELECT data FROM blobs WHERE sha256 = $1", sha256)
        return None if data is None else bytes(data)

    data = await engine.run(stored)
    if data is None:
        raise NotFound(f"no blob {sha256}")
    await asyncio.to_thread(write_atomically, path, data)
    return path
