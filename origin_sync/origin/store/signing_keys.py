"""The published signing-key set: kept in the meta table and appended to the change log for every region."""

from __future__ import annotations

import json
from typing import Any

from origin_sync.origin.store import changelog
from origin_sync.origin.store.dialect import Connection
from origin_sync.origin.store.types import KeySetUpdate
from origin_sync.wire.protocol import ALL_REGIONS, OP_SIGNING_KEYS

KEY_SET_META = "signing_keys"  # the meta row holding the published signing-key set (JSON)


async def key_set(conn: Connection) -> dict[str, Any] | None:
    value = await conn.fetchval("SELECT value FROM meta WHERE key = $1", KEY_SET_META)
    return json.loads(value) if value else None


async def update_key_set(conn: Connection, update: KeySetUpdate) -> tuple[int, dict[str, Any]]:
    """The new key set `update(current)`, stored and appended as a `signing_keys` change: (version, key set)."""
    new = update(await key_set(conn))
    version = await changelog.append(conn, OP_SIGNING_KEYS, new["active"], [ALL_REGIONS], {"key_set": new})
    await conn.execute(
        "INSERT INTO meta(key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        KEY_SET_META,
        json.dumps(new),
    )
    return version, new
