"""Shopper profiles at the origin: the events each shopper's summary is folded from (imported order lines and the
edges' ingested events, each once), the summaries themselves with the regions the shopper was seen in, and their
changes in the log; erasure, which also redacts the shopper's earlier summaries in the log, and export.

Keyed by pseudonym only: the origin never sees a shopper id (the edges and `edgerec profiles import` hash it)."""

from __future__ import annotations

import json
import time
from collections import defaultdict
from typing import Any, Iterable

from origin_sync.origin.store import changelog
from origin_sync.origin.store.dialect import Connection
from origin_sync.wire.events import FEEDBACK_KINDS
from origin_sync.wire.profiles import (
    MAX_ITEM_CHARS,
    ProfileEvent,
    decode_summary,
    encode_summary,
    fold,
    is_pseudonym,
    readable,
)
from origin_sync.wire.protocol import ALL_REGIONS, OP_PROFILE_ERASE, OP_PROFILE_UPSERT, OP_REDACTED, canonical, unpack

EVENT_COLUMNS = ("pseudonym", "event_key", "kind", "item", "ts", "region")
Row = tuple[str, str, str, str, int, str]  # the columns above


async def _events_of(conn: Connection, pseudonyms: list[str]) -> dict[str, list[Row]]:
    rows = await conn.fetch(
        "SELECT pseudonym, event_key, kind, item, ts, region FROM profile_events "  # nosec B608 - constant SQL
        f"WHERE {conn.is_in('pseudonym', 1)}",
        conn.text_list(pseudonyms),
    )
    grouped: dict[str, list[Row]] = defaultdict(list)
    for r in rows:
        grouped[r[0]].append((r[0], r[1], r[2], r[3], int(r[4]), r[5]))
    return grouped


async def _erased_at(conn: Connection, pseudonyms: list[str]) -> dict[str, float]:
    rows = await conn.fetch(
        f"SELECT pseudonym, erased_at FROM profile_erasures WHERE {conn.is_in('pseudonym', 1)}",  # nosec B608
        conn.text_list(pseudonyms),
    )
    return {r[0]: float(r[1]) for r in rows}


async def record_events(conn: Connection, rows: Iterable[Row]) -> dict[str, Any]:
    """Add events the log has not seen (by pseudonym and key), refold the summaries they change and append one
    `profile_upsert` change per summary that differs from the stored one, tagged with the shopper's regions (none
    for a shopper seen in no region: no edge gets it). {"events_new", "profiles_changed", "data_version"}."""
    wanted: dict[tuple[str, str], Row] = {}
    for row in rows:
        wanted.setdefault((row[0], row[1]), row)
    pseudonyms = sorted({p for p, _ in wanted})
    erased = await _erased_at(conn, pseudonyms)
    if erased:  # an erasure is not undone by the events from before it: a batch shipped late, the file imported again
        wanted = {k: row for k, row in wanted.items() if row[4] > erased.get(row[0], -1.0)}
        pseudonyms = sorted({p for p, _ in wanted})
    if not pseudonyms:
        return {"events_new": 0, "profiles_changed": 0, "data_version": await changelog.head_version(conn)}
    known = await _events_of(conn, pseudonyms)
    seen = {(p, r[1]) for p, events in known.items() for r in events}
    fresh = [row for key, row in wanted.items() if key not in seen]
    if fresh:
        await conn.copy_rows("profile_events", EVENT_COLUMNS, fresh)
    changed = sorted({row[0] for row in fresh})
    for row in fresh:
        known[row[0]].append(row)
    stored = {
        r[0]: (bytes(r[1]), _regions(conn, r[2]))
        for r in await conn.fetch(
            "SELECT pseudonym, summary, regions FROM profiles "  # nosec B608 - constant SQL
            f"WHERE {conn.is_in('pseudonym', 1)}",
            conn.text_list(changed),
        )
    }
    entries, writes = [], []
    for pseudonym in changed:
        events = known[pseudonym]
        summary, summary_ts = fold(ProfileEvent(r[1], r[2], r[3], r[4]) for r in events)
        body = encode_summary(summary)
        regions = sorted({r[5] for r in events if r[5]})
        old_body, old_regions = stored.get(pseudonym, (None, []))
        if body == old_body and regions == old_regions:
            continue
        writes.append((pseudonym, body, summary_ts, regions))
        if regions:
            fields = {"pseudonym": pseudonym, "summary": body, "summary_ts": summary_ts, "regions": regions}
            # Regions only grow, so the old ones are among the new; tagged with both all the same, as offers are.
            entries.append((OP_PROFILE_UPSERT, pseudonym, sorted(set(old_regions) | set(regions)), fields))
    versions = iter(await changelog.append_many(conn, entries, None))
    if writes:
        await conn.executemany(
            "INSERT INTO profiles(pseudonym, summary, summary_ts, regions, version) VALUES ($1, $2, $3, $4, $5) "
            "ON CONFLICT (pseudonym) DO UPDATE SET summary = excluded.summary, summary_ts = excluded.summary_ts, "
            "regions = excluded.regions, version = excluded.version",
            [
                (p, body, ts, conn.text_list(regions), next(versions) if regions else None)
                for p, body, ts, regions in writes
            ],
        )
    return {
        "events_new": len(fresh),
        "profiles_changed": len(writes),
        "data_version": await changelog.head_version(conn),
    }


def _regions(conn: Connection, value: Any) -> list[str]:
    return sorted(json.loads(value) if isinstance(value, str) else value)


async def record_feedback(conn: Connection, events: list[dict[str, Any]]) -> dict[str, Any]:
    """Fold the feedback events of an ingested batch (purchase, add_to_cart, click with a shopper pseudonym) into
    their shoppers' summaries. An offer id becomes its offer's SKU (what order history and `recent_items` name),
    or stays as it is for an offer the origin does not know. Idempotent: each (event, offer) is one event."""
    feedback = [e for e in events if e["kind"] in FEEDBACK_KINDS and is_pseudonym(e.get("shopper"))]
    offer_ids = sorted({o for e in feedback for o in e["offer_ids"]})
    skus: dict[str, str] = {}
    if offer_ids:
        for r in await conn.fetch(
            f"SELECT id, body FROM offers WHERE {conn.is_in('id', 1)}",  # nosec B608 - constant SQL
            conn.text_list(offer_ids),
        ):
            skus[r[0]] = str(unpack(r[1]).get("sku") or r[0]).upper()
    rows: list[Row] = []
    for e in feedback:
        for offer_id in e["offer_ids"]:
            item = skus.get(offer_id, offer_id)
            if 1 <= len(item) <= MAX_ITEM_CHARS and 0 <= e["ts"] < 2**32:
                rows.append((e["shopper"], f"event:{e['id']}:{offer_id}", e["kind"], item, int(e["ts"]), e["region"]))
    return await record_events(conn, rows)


async def erase(conn: Connection, pseudonym: str) -> dict[str, Any]:
    """Delete the shopper's summary and events, redact their earlier summaries in the log (no edge gets them again,
    and their bytes leave the database) and append a `profile_erase` change for every region."""
    profiles = await conn.execute("DELETE FROM profiles WHERE pseudonym = $1", pseudonym)
    events = await conn.execute("DELETE FROM profile_events WHERE pseudonym = $1", pseudonym)
    shipped = await conn.fetch("SELECT version FROM changes WHERE op = $1 AND key = $2", OP_PROFILE_UPSERT, pseudonym)
    if shipped:
        await conn.executemany(
            "UPDATE changes SET op = $1, body = $2 WHERE version = $3",
            [(OP_REDACTED, canonical({"version": int(r[0]), "op": OP_REDACTED}), int(r[0])) for r in shipped],
        )
    await conn.execute(
        "INSERT INTO profile_erasures(pseudonym, erased_at) VALUES ($1, $2) ON CONFLICT (pseudonym) DO UPDATE "
        "SET erased_at = excluded.erased_at",
        pseudonym,
        time.time(),
    )
    version = await changelog.append(conn, OP_PROFILE_ERASE, pseudonym, [ALL_REGIONS], {"pseudonym": pseudonym})
    return {
        "profile_erased": profiles > 0,
        "profile_events_erased": events,
        "changes_redacted": len(shipped),
        "data_version": version,
    }


async def export(conn: Connection, pseudonym: str) -> dict[str, Any] | None:
    """Everything the origin's profile tables hold of one shopper, as plain JSON; None when they hold nothing."""
    row = await conn.fetchrow(
        "SELECT summary, summary_ts, regions, version FROM profiles WHERE pseudonym = $1", pseudonym
    )
    events = (await _events_of(conn, [pseudonym])).get(pseudonym, [])
    if row is None and not events:
        return None
    return {
        "pseudonym": pseudonym,
        "regions": _regions(conn, row[2]) if row else [],
        "summary": readable(decode_summary(bytes(row[0]))) if row else None,
        "summary_ts": int(row[1]) if row else None,
        "data_version": None if row is None or row[3] is None else int(row[3]),
        "events": [
            {"key": r[1], "kind": r[2], "item": r[3], "ts": r[4], "region": r[5] or None}
            for r in sorted(events, key=lambda r: (r[4], r[1]))
        ],
    }


async def page(conn: Connection, regions: tuple[str, ...], after: str, limit: int) -> dict[str, Any]:
    """The summaries of the shoppers seen in `regions`, by pseudonym after `after`, at the head version: what an
    edge that took a snapshot (which carries no profiles) loads its store from, page by page."""
    rows = await conn.fetch(
        "SELECT pseudonym, summary, summary_ts FROM profiles WHERE pseudonym > $1 AND "  # nosec B608 - constant SQL
        f"{conn.overlaps('regions', 2)} ORDER BY pseudonym LIMIT $3",
        after,
        conn.text_list(regions),
        limit,
    )
    return {
        "version": await changelog.head_version(conn),
        "profiles": [[r[0], bytes(r[1]), int(r[2])] for r in rows],
        "next": rows[-1][0] if len(rows) == limit else None,
    }
