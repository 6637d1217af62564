"""Offers: single and batch upserts (an unchanged offer writes nothing), read-modify-write updates, deletes, and
the offers of some regions for a snapshot."""

from __future__ import annotations

from typing import Any

from origin_sync.origin.store import bodies, changelog
from origin_sync.origin.store.dialect import Connection
from origin_sync.origin.store.types import OfferUpdate
from origin_sync.wire import digest
from origin_sync.wire.protocol import OP_OFFER_DELETE, OP_OFFER_UPSERT, pack, unpack

_UPSERT = (
    "INSERT INTO offers(id, body, regions, version) VALUES ($1, $2, $3, $4) ON CONFLICT (id) DO UPDATE SET "
    "body = excluded.body, regions = excluded.regions, version = excluded.version"
)


async def stored(conn: Connection, offer_id: str) -> dict[str, Any] | None:
    return await bodies.stored(conn, "offers", offer_id)


async def offer(conn: Connection, offer_id: str) -> dict[str, Any]:
    return await bodies.existing(conn, "offers", offer_id)


async def in_regions(conn: Connection, regions: tuple[str, ...]) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        f"SELECT body FROM offers WHERE {conn.overlaps('regions', 1)} ORDER BY id",  # nosec B608 - constant SQL
        conn.text_list(regions),
    )
    return [unpack(r[0]) for r in rows]


async def skus_of(conn: Connection, offer_ids: list[str]) -> dict[str, str]:
    """offer id -> SKU of those of `offer_ids` that are stored."""
    if not offer_ids:
        return {}
    rows = await conn.fetch(
        f"SELECT id, body FROM offers WHERE {conn.is_in('id', 1)}",  # nosec B608 - constant SQL
        conn.text_list(sorted(set(offer_ids))),
    )
    return {r[0]: str(unpack(r[1])["sku"]) for r in rows}


async def every_offer(conn: Connection) -> list[dict[str, Any]]:
    return [unpack(r[0]) for r in await conn.fetch("SELECT body FROM offers")]


async def upsert_many(conn: Connection, offers: list[dict[str, Any]]) -> list[str]:
    """Validated offers, in order: for each "created", "changed" or "unchanged" (equal to the stored one, so not
    written and no change appended)."""
    rows = await conn.fetch(
        f"SELECT id, body FROM offers WHERE {conn.is_in('id', 1)}",  # nosec B608 - constant SQL
        conn.text_list(sorted({o["id"] for o in offers})),
    )
    known = {r[0]: unpack(r[1]) for r in rows}
    outcomes, writes, update = [], [], digest.Update()
    for new in offers:  # in order: an id twice in a batch is written twice, the last one last
        old = known.get(new["id"])
        if old == new:
            outcomes.append("unchanged")
            continue
        outcomes.append("created" if old is None else "changed")
        writes.append((new, old["regions"] if old else []))
        update.replace(digest.offer_elements(old) if old else [], digest.offer_elements(new))
        known[new["id"]] = new
    # An edge whose region an offer just left must hear about it, so a change is tagged with old and new regions.
    versions = await changelog.append_many(
        conn,
        [(OP_OFFER_UPSERT, o["id"], sorted(set(old) | set(o["regions"])), {"offer": o}) for o, old in writes],
        update,
    )
    rows_out = [(o["id"], pack(o), conn.text_list(o["regions"]), v) for (o, _), v in zip(writes, versions)]
    if len(rows_out) == 1:
        await conn.execute(_UPSERT, *rows_out[0])
    elif rows_out:
        await conn.executemany(_UPSERT, rows_out)
    return outcomes


async def upsert(conn: Connection, new: dict[str, Any]) -> int:
    """One validated offer, written even when equal to the stored one: the version of its change."""
    old = await stored(conn, new["id"])
    update = digest.Update().replace(digest.offer_elements(old) if old else [], digest.offer_elements(new))
    version = await changelog.append(
        conn,
        OP_OFFER_UPSERT,
        new["id"],
        sorted(set(old["regions"] if old else ()) | set(new["regions"])),
        {"offer": new},
        update,
    )
    await conn.execute(_UPSERT, new["id"], pack(new), conn.text_list(new["regions"]), version)
    return version


async def update(conn: Connection, offer_id: str, change: OfferUpdate) -> dict[str, Any]:
    """The stored offer replaced by `change(stored)`: an exception from it aborts the write, an equal result
    writes nothing."""
    old = await offer(conn, offer_id)
    new = change(old)
    if new != old:
        await upsert(conn, new)
    return new


async def delete(conn: Connection, offer_id: str) -> int:
    old = await offer(conn, offer_id)
    # Tagged with the offer's regions: only their edges held it.
    elements = digest.offer_elements(old)
    return await bodies.delete(conn, "offers", offer_id, OP_OFFER_DELETE, list(old["regions"]), elements)
