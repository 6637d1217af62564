"""The audit log of admin calls: kept beside the data they changed, outside the change log (never synced)."""

from __future__ import annotations

from typing import Any

from origin_sync.origin.store.dialect import Connection

AUDIT_FIELDS = ("ts", "actor", "method", "path", "target", "peer", "status")


async def record(conn: Connection, entry: dict[str, Any]) -> None:
    await conn.execute(
        "INSERT INTO audit_log(ts, actor, method, path, target, peer, status) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        *(entry.get(f) for f in AUDIT_FIELDS),
    )


async def newest(conn: Connection, limit: int) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT id, ts, actor, method, path, target, peer, status FROM audit_log ORDER BY id DESC LIMIT $1", limit
    )
    return [dict(zip(("id", *AUDIT_FIELDS), tuple(r))) for r in rows]


async def purge(conn: Connection, before_ts: float) -> int:
    return await conn.execute("DELETE FROM audit_log WHERE ts < $1", before_ts)
