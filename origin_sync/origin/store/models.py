"""Model bundles in the change log: publish (in a state), activate (the one change edges hear of), list, and the
refs that snapshots and experiments carry."""

from __future__ import annotations

import json
import time
from typing import Any

from edgerec.core.files import NotFound
from origin_sync.origin.store import blobs, changelog
from origin_sync.origin.store.dialect import Connection
from origin_sync.origin.store.types import (
    MODEL_ACTIVE,
    MODEL_CANDIDATE,
    MODEL_PUBLISHED,
    MODEL_RETIRED,
    UnservableModel,
)
from origin_sync.wire import digest
from origin_sync.wire.protocol import ALL_REGIONS, OP_MODEL_ACTIVATE


def state_after_publish(stored: str, wanted: str) -> str | None:
    """Publishing a version again (the same bytes): the state it moves to, or None to keep the stored one. A publish
    never demotes (an active or candidate model stays so); `active` is reached through activation, not here."""
    if wanted == MODEL_CANDIDATE and stored in (MODEL_PUBLISHED, MODEL_RETIRED):
        return MODEL_CANDIDATE
    return None


async def model_ref(conn: Connection, model_version: str) -> dict[str, Any]:
    row = await conn.fetchrow("SELECT sha256, manifest FROM models WHERE version = $1", model_version)
    if row is None:
        raise NotFound(f"no model {model_version!r}")
    return {"version": model_version, "sha256": row[0], "manifest": json.loads(row[1])}


async def active_version(conn: Connection) -> str | None:
    value = await conn.fetchval("SELECT value FROM meta WHERE key = 'active_model'")
    return None if value is None else str(value)


async def active_ref(conn: Connection) -> dict[str, Any] | None:
    active = await active_version(conn)
    return await model_ref(conn, active) if active else None


async def servable_ref(conn: Connection, model_version: str) -> dict[str, Any]:
    """The ref of a model an experiment's variant names: any stored model but a merely published one."""
    ref = await model_ref(conn, model_version)
    if await conn.fetchval("SELECT state FROM models WHERE version = $1", model_version) == MODEL_PUBLISHED:
        raise UnservableModel(
            f"model {model_version!r} is only published: publish it as a candidate "
            f"(edgerec model publish --candidate) or activate it first"
        )
    return ref


async def activate(conn: Connection, model_version: str) -> int:
    ref = await model_ref(conn, model_version)
    update = digest.Update().replace(digest.model_element(await active_ref(conn)), digest.model_element(ref))
    version = await changelog.append(conn, OP_MODEL_ACTIVATE, model_version, [ALL_REGIONS], {"model": ref}, update)
    await conn.execute(
        "INSERT INTO meta(key, value) VALUES ('active_model', $1) "
        "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        model_version,
    )
    await conn.execute(
        "UPDATE models SET state = $1 WHERE state = $2 AND version <> $3", MODEL_RETIRED, MODEL_ACTIVE, model_version
    )
    await conn.execute("UPDATE models SET state = $1 WHERE version = $2", MODEL_ACTIVE, model_version)
    return version


async def activate_unless_active(conn: Connection, model_version: str) -> tuple[int, bool]:
    """(data version, True) with the activation appended, or (the head, False) when it is active already: nothing
    is appended, so no edge rebuilds."""
    if await active_version(conn) == model_version:
        return await changelog.head_version(conn), False
    return await activate(conn, model_version), True


async def publish(conn: Connection, manifest: dict[str, Any], sha: str, data: bytes, state: str) -> tuple[int, str]:
    """Store a bundle whose bytes are in the blob store already: (data version, the model's state)."""
    await blobs.put_in_database(conn, sha, data)
    await conn.execute(
        "INSERT INTO models(version, sha256, manifest, created_at, state) VALUES ($1, $2, $3, $4, $5) "
        "ON CONFLICT (version) DO NOTHING",
        manifest["version"],
        sha,
        json.dumps(manifest),
        time.time(),
        MODEL_PUBLISHED if state == MODEL_ACTIVE else state,
    )
    row = await conn.fetchrow("SELECT sha256, state FROM models WHERE version = $1", manifest["version"])
    if row[0] != sha:
        raise ValueError(f"model version {manifest['version']!r} already exists with other bytes")
    if state == MODEL_ACTIVE:
        return await activate(conn, manifest["version"]), MODEL_ACTIVE
    moved = state_after_publish(row[1], state)
    if moved is not None:
        await conn.execute("UPDATE models SET state = $1 WHERE version = $2", moved, manifest["version"])
    return await changelog.head_version(conn), moved or row[1]


async def retire(conn: Connection, model_version: str) -> str:
    """Retire a candidate or published model (its experiment ended, it is served nowhere; a later rollback may still
    activate it); the active model cannot be retired, only replaced by another activation. Returns its state."""
    state = await conn.fetchval("SELECT state FROM models WHERE version = $1", model_version)
    if state is None:
        raise NotFound(f"no model {model_version!r}")
    if state == MODEL_ACTIVE:
        raise ValueError(f"model {model_version!r} is active: activate another model instead of retiring it")
    await conn.execute("UPDATE models SET state = $1 WHERE version = $2", MODEL_RETIRED, model_version)
    return str(state)


async def bundle_of(conn: Connection, model_version: str) -> tuple[dict[str, Any], str]:
    """(manifest, sha256) of a stored model."""
    ref = await model_ref(conn, model_version)
    return ref["manifest"], ref["sha256"]


async def every_model(conn: Connection) -> list[dict[str, Any]]:
    """Oldest first: version, sha256, created_at, state and `active` (state == active)."""
    rows = await conn.fetch("SELECT version, sha256, created_at, state FROM models ORDER BY created_at")
    return [
        {"version": r[0], "sha256": r[1], "created_at": r[2], "state": r[3], "active": r[3] == MODEL_ACTIVE}
        for r in rows
    ]
