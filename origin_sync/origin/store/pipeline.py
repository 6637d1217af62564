"""The learning pipeline's decisions with their evidence, kept beside the audit log (never synced)."""

from __future__ import annotations

import json
from typing import Any

from origin_sync.origin.store.dialect import Connection

DECISION_FIELDS = ("ts", "pipeline", "round", "step", "decision", "evidence")


async def record(conn: Connection, entry: dict[str, Any]) -> int:
    await conn.execute(
        "INSERT INTO pipeline_decisions(ts, pipeline, round, step, decision, evidence) VALUES ($1, $2, $3, $4, $5, $6)",
        entry["ts"],
        entry["pipeline"],
        entry["round"],
        entry["step"],
        entry["decision"],
        json.dumps(entry.get("evidence") or {}, sort_keys=True),
    )
    return int(await conn.fetchval("SELECT MAX(id) FROM pipeline_decisions"))


async def newest(conn: Connection, pipeline: str | None, limit: int) -> list[dict[str, Any]]:
    """The newest decisions, newest first (of one pipeline, or of all)."""
    columns = "id, " + ", ".join(DECISION_FIELDS)
    if pipeline is None:
        rows = await conn.fetch(
            f"SELECT {columns} FROM pipeline_decisions ORDER BY id DESC LIMIT $1",
            limit,  # nosec B608
        )
    else:
        rows = await conn.fetch(
            f"SELECT {columns} FROM pipeline_decisions WHERE pipeline = $1 ORDER BY id DESC LIMIT $2",  # nosec B608
            pipeline,
            limit,
        )
    entries = [dict(zip(("id", *DECISION_FIELDS), tuple(r))) for r in rows]
    for entry in entries:
        entry["evidence"] = json.loads(entry["evidence"])
    return entries
