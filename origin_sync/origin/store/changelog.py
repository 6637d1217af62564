"""The change log: gapless versions, the hash chain hash(v) = sha256(hash(v-1) || canonical change bytes), the
pages of deltas an edge reads, compaction and the chain's verification."""

from __future__ import annotations

import time
from typing import Any

from origin_sync.origin.store import digests
from origin_sync.origin.store.dialect import Connection
from origin_sync.origin.store.types import AheadOfOrigin, Compacted, DeltaPage, LogHead
from origin_sync.wire import digest
from origin_sync.wire.protocol import ALL_REGIONS, OP_REDACTED, canonical, chain_hash

Entry = tuple[str, str, list[str], dict[str, Any]]  # op, key, the regions it concerns, the change's fields


async def lock_head(conn: Connection) -> None:
    """Take the log head's row lock first in a write, so that writers (in every process) are serialised and each
    sees the rows the one before it committed (PostgreSQL, READ COMMITTED); SQLite's BEGIN IMMEDIATE already is."""
    if conn.for_update:
        await conn.execute(f"SELECT 1 FROM log_head WHERE id = 1{conn.for_update}")


async def head(conn: Connection) -> LogHead:
    row = await conn.fetchrow("SELECT version, hash, floor FROM log_head WHERE id = 1")
    return LogHead(int(row[0]), bytes(row[1]), int(row[2]))


async def head_version(conn: Connection) -> int:
    return int(await conn.fetchval("SELECT version FROM log_head WHERE id = 1"))


async def append(
    conn: Connection, op: str, key: str, regions: list[str], fields: dict[str, Any], update: digest.Update | None = None
) -> int:
    """Append one change (and advance the state digests by `update`): its version."""
    return (await append_many(conn, [(op, key, regions, fields)], update))[0]


async def append_many(conn: Connection, entries: list[Entry], update: digest.Update | None) -> list[int]:
    """Append changes in a few statements: the versions are taken with one update of the log head row (its lock
    serialises writers), the chain is computed here, the rows go in together and one notification wakes the
    long-polls of other processes."""
    if not entries:
        return []
    row = await conn.fetchrow(
        "UPDATE log_head SET version = version + $1 WHERE id = 1 RETURNING version, hash", len(entries)
    )
    first, prev = int(row[0]) - len(entries) + 1, bytes(row[1])
    rows, now = [], time.time()
    for version, (op, key, regions, fields) in enumerate(entries, start=first):
        body = canonical({"version": version, "op": op, **fields})
        chained = chain_hash(prev, body)
        rows.append((version, op, key, conn.text_list(sorted(regions)), body, prev, chained, now))
        prev = chained
    insert = (
        "INSERT INTO changes(version, op, key, regions, body, prev_hash, hash, created_at) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
    )
    if len(rows) == 1:
        await conn.execute(insert, *rows[0])
    else:
        await conn.executemany(insert, rows)
    last = rows[-1][0]
    await conn.execute("UPDATE log_head SET hash = $1 WHERE id = 1", prev)
    await digests.advance(conn, update, last)
    await conn.notify(str(last))
    return [r[0] for r in rows]


async def _hash_at(conn: Connection, version: int, floor: int, floor_hash: bytes) -> bytes:
    if version == floor:
        return floor_hash
    stored = await conn.fetchval("SELECT hash FROM changes WHERE version = $1", version)
    if stored is None:
        raise LookupError(f"no change {version} in the log")
    return bytes(stored)


async def changes_since(conn: Connection, since: int, regions: tuple[str, ...], limit: int) -> DeltaPage:
    """The page after `since` for an edge of `regions`; call in a read transaction, so that it is one version's."""
    row = await conn.fetchrow("SELECT version, hash, floor, floor_hash FROM log_head WHERE id = 1")
    version, head_hash, floor = int(row[0]), bytes(row[1]), int(row[2])
    if since > version:
        raise AheadOfOrigin(f"edge version {since} is ahead of the origin's {version}; take a snapshot")
    if since < floor:
        raise Compacted(since, floor)
    from_hash = await _hash_at(conn, since, floor, bytes(row[3]))
    # The page of all changes (cheap columns), with the bodies of those only that concern the regions. A redacted
    # change (an erased shopper's summary) concerns no edge any more: the next change's prev hash bridges it.
    wanted = f"({conn.overlaps('regions', 3)} AND op <> '{OP_REDACTED}')"
    rows = await conn.fetch(
        f"SELECT version, hash, {wanted} AS wanted, CASE WHEN {wanted} THEN body END AS body, "  # nosec B608 - constant SQL
        "prev_hash FROM changes WHERE version > $1 ORDER BY version LIMIT $2",
        since,
        limit,
        conn.text_list([*regions, ALL_REGIONS]),
    )
    scoped, at = await digests.vectors(conn, {*regions, ALL_REGIONS}), await digests.digests_at(conn)
    changes = [{"prev": bytes(r[4]), "body": bytes(r[3])} for r in rows if r[2]]
    if len(rows) == limit:  # a full page: the edge reaches the last row read, not the head
        to, to_hash = int(rows[-1][0]), bytes(rows[-1][1])
    else:
        to, to_hash = version, head_hash
    return DeltaPage(
        since=since,
        from_hash=from_hash,
        to=to,
        to_hash=to_hash,
        head=version,
        changes=changes,
        state_digest=digests.page_digest(to, version, at, scoped, regions),
    )


def _compaction_floor(head: int, floor: int, keep_versions: int | None, aged_out: int | None) -> int:
    candidates = [floor]
    if keep_versions is not None:
        candidates.append(head - keep_versions)
    if aged_out is not None:
        candidates.append(aged_out)
    return max(0, min(max(candidates), head))


async def compact(conn: Connection, keep_versions: int | None, keep_seconds: float | None) -> int:
    """Drop the changes the retention no longer needs, in a write transaction: the new floor."""
    row = await conn.fetchrow("SELECT version, floor FROM log_head WHERE id = 1")
    version, floor = int(row[0]), int(row[1])
    aged_out = None
    if keep_seconds is not None:
        newest_old = await conn.fetchval(
            "SELECT MAX(version) FROM changes WHERE created_at < $1", time.time() - keep_seconds
        )
        aged_out = floor if newest_old is None else int(newest_old)
    new_floor = _compaction_floor(version, floor, keep_versions, aged_out)
    if new_floor > floor:
        floor_hash = await _hash_at(conn, new_floor, floor, b"")
        await conn.execute("DELETE FROM changes WHERE version <= $1", new_floor)
        await conn.execute("UPDATE log_head SET floor = $1, floor_hash = $2 WHERE id = 1", new_floor, floor_hash)
    return new_floor


async def verify_chain(conn: Connection) -> LogHead:
    """Recompute every retained link, in a read transaction; ValueError at the first broken one."""
    row = await conn.fetchrow("SELECT version, hash, floor, floor_hash FROM log_head WHERE id = 1")
    head_version, head_hash, floor = int(row[0]), bytes(row[1]), int(row[2])
    expected, link = floor, bytes(row[3])
    for version, op, body, prev, stored in await conn.fetch(
        "SELECT version, op, body, prev_hash, hash FROM changes ORDER BY version"
    ):
        if version != expected + 1 or bytes(prev) != link:
            raise ValueError(f"chain broken at version {version}")
        # A redacted change's body is gone (GDPR erasure): its stored hash carries the chain on, and the links
        # before and after it are still checked.
        link = bytes(stored) if op == OP_REDACTED else chain_hash(link, bytes(body))
        if link != bytes(stored):
            raise ValueError(f"hash mismatch at version {version}")
        expected = int(version)
    if expected != head_version or link != head_hash:
        raise ValueError("the log head does not match the last change")
    return LogHead(head_version, head_hash, floor)
