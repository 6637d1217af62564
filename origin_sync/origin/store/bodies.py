"""The tables that keep one packed body a row by id (offers, experiments): read one, insist that it exists, or
delete it with its change."""

from __future__ import annotations

from typing import Any, Literal

from edgerec.core.files import NotFound
from origin_sync.origin.store import changelog
from origin_sync.origin.store.dialect import Connection
from origin_sync.wire import digest
from origin_sync.wire.protocol import unpack

BodyTable = Literal["offers", "experiments"]


async def stored(conn: Connection, table: BodyTable, row_id: str) -> dict[str, Any] | None:
    body = await conn.fetchval(f"SELECT body FROM {table} WHERE id = $1", row_id)  # nosec B608 - table is a Literal
    return None if body is None else unpack(body)


async def existing(conn: Connection, table: BodyTable, row_id: str) -> dict[str, Any]:
    """The stored body, or NotFound naming it (`no offer 'x'`, `no experiment 'y'`)."""
    found = await stored(conn, table, row_id)
    if found is None:
        raise NotFound(f"no {table.removesuffix('s')} {row_id!r}")
    return found


async def delete(
    conn: Connection, table: BodyTable, row_id: str, op: str, regions: list[str], elements: list[tuple[str, bytes]]
) -> int:
    """Append the deletion (`{"<kind>_id": row_id}`, tagged with `regions`, the body's digest `elements` removed),
    then delete the row: the version of the change."""
    kind = table.removesuffix("s")
    update = digest.Update().replace(elements, [])
    version = await changelog.append(conn, op, row_id, regions, {f"{kind}_id": row_id}, update)
    await conn.execute(f"DELETE FROM {table} WHERE id = $1", row_id)  # nosec B608 - table is a Literal
    return version
