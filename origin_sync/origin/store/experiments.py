"""Experiments in the change log: upsert (each variant's model resolved to its ref, overlaps refused), delete, read."""

from __future__ import annotations

from typing import Any

from origin_sync.origin.store import bodies, changelog, models
from origin_sync.origin.store.dialect import Connection
from origin_sync.wire import digest
from origin_sync.wire.experiments import check_no_overlap
from origin_sync.wire.protocol import ALL_REGIONS, OP_EXPERIMENT_DELETE, OP_EXPERIMENT_UPSERT, pack, unpack


async def stored(conn: Connection, experiment_id: str) -> dict[str, Any] | None:
    return await bodies.stored(conn, "experiments", experiment_id)


async def experiment(conn: Connection, experiment_id: str) -> dict[str, Any]:
    return await bodies.existing(conn, "experiments", experiment_id)


async def every_experiment(conn: Connection) -> list[dict[str, Any]]:
    return [unpack(r[0]) for r in await conn.fetch("SELECT body FROM experiments ORDER BY id")]


async def upsert(conn: Connection, validated: dict[str, Any]) -> int:
    """Store a validated experiment as synced: each variant carries the ref of its model (None: the active one)."""
    # The experiment's own mistakes first (an unknown or merely published model), then its neighbours; inside the
    # write transaction, so two overlapping PUTs cannot both pass.
    refs = {v["model"]: await models.servable_ref(conn, v["model"]) for v in validated["variants"] if v["model"]}
    check_no_overlap(validated, await every_experiment(conn))
    body = {
        **validated,
        "variants": [{**v, "model_ref": refs[v["model"]] if v["model"] else None} for v in validated["variants"]],
    }
    update = digest.Update().replace(
        digest.experiment_element(await stored(conn, body["id"])), digest.experiment_element(body)
    )
    version = await changelog.append(
        conn, OP_EXPERIMENT_UPSERT, body["id"], [ALL_REGIONS], {"experiment": body}, update
    )
    await conn.execute(
        "INSERT INTO experiments(id, body, version) VALUES ($1, $2, $3) ON CONFLICT (id) DO UPDATE "
        "SET body = excluded.body, version = excluded.version",
        body["id"],
        pack(body),
        version,
    )
    return version


async def delete(conn: Connection, experiment_id: str) -> int:
    old = await experiment(conn, experiment_id)
    elements = digest.experiment_element(old)
    return await bodies.delete(conn, "experiments", experiment_id, OP_EXPERIMENT_DELETE, [ALL_REGIONS], elements)
