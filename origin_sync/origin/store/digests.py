"""The state digests kept beside the change log: one LtHash16 vector per scope (a region, or "*" for the model and
the experiments), advanced in every write's transaction and rebuilt from the whole state where they lag the head."""

from __future__ import annotations

from typing import Any, Iterable

from origin_sync.origin.store.dialect import Connection
from origin_sync.wire import digest

# The meta row naming the version the `state_digests` rows describe: every write advances both in its transaction,
# and an origin that finds them apart at start (a database from before the digests) rebuilds the rows.
DIGESTS_AT_META = "state_digests_at"


async def vectors(conn: Connection, scopes: Iterable[str] | None = None) -> dict[str, Any]:
    wanted = None if scopes is None else set(scopes)
    rows = await conn.fetch("SELECT scope, lanes FROM state_digests")
    return {r[0]: digest.from_bytes(bytes(r[1])) for r in rows if wanted is None or r[0] in wanted}


async def digests_at(conn: Connection) -> int | None:
    value = await conn.fetchval("SELECT value FROM meta WHERE key = $1", DIGESTS_AT_META)
    return None if value is None else int(value)


async def _store(conn: Connection, scoped: dict[str, Any], version: int) -> None:
    if scoped:
        await conn.executemany(
            "INSERT INTO state_digests(scope, lanes) VALUES ($1, $2) ON CONFLICT (scope) DO "
            "UPDATE SET lanes = excluded.lanes",
            [(scope, vector.tobytes()) for scope, vector in scoped.items()],
        )
    await conn.execute(
        "INSERT INTO meta(key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        DIGESTS_AT_META,
        str(version),
    )


async def advance(conn: Connection, update: digest.Update | None, version: int) -> None:
    """The vectors after a write that made `version` (an update of None touches no scope: signing keys)."""
    scoped = update.apply(await vectors(conn, update.scopes())) if update is not None else {}
    await _store(conn, scoped, version)


def rebuilt_vectors(
    offers: list[dict[str, Any]], model: dict[str, Any] | None, experiments: list[dict[str, Any]]
) -> dict[str, Any]:
    """Every scope's vector from the whole state (O(state)): for a database that has none yet."""
    elements: dict[str, list[bytes]] = {}
    for scope, element in (
        [e for o in offers for e in digest.offer_elements(o)]
        + digest.model_element(model)
        + [e for x in experiments for e in digest.experiment_element(x)]
    ):
        elements.setdefault(scope, []).append(element)
    return {scope: digest.sum_of(items) for scope, items in elements.items()}


async def rebuild(
    conn: Connection,
    version: int,
    offers: list[dict[str, Any]],
    model: dict[str, Any] | None,
    experiments: list[dict[str, Any]],
) -> None:
    await conn.execute("DELETE FROM state_digests")
    await _store(conn, rebuilt_vectors(offers, model, experiments), version)


def page_digest(to: int, head: int, at: int | None, scoped: dict[str, Any], regions: tuple[str, ...]) -> bytes | None:
    """The signed digest of the regions' state at `to`: only the head's is kept, so a page that stops short of the
    head (or rows an older origin left behind) carries none; the edge then proves its state at the next page."""
    if to != head or at != head:
        return None
    return digest.checksum(digest.combined(scoped, regions))
