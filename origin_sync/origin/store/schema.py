"""The change-log database's tables, written once for both engines, and the migrations of databases made before."""

from __future__ import annotations

from origin_sync.origin.store.dialect import Connection
from origin_sync.wire.protocol import GENESIS_HASH, unpack

SCHEMA_LOCK = 0x6564676572656331  # the advisory lock taken while creating the schema: "edgerec1"

_TABLES = """
CREATE TABLE IF NOT EXISTS log_head (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    version    {bigint} NOT NULL,
    hash       {bytes} NOT NULL,
    floor      {bigint} NOT NULL,
    floor_hash {bytes} NOT NULL
);
CREATE TABLE IF NOT EXISTS changes (
    version    {bigint} PRIMARY KEY,
    op         TEXT NOT NULL,
    key        TEXT NOT NULL,
    regions    {text_list} NOT NULL,  -- the market codes this change concerns, or ["*"]
    body       {bytes} NOT NULL,      -- canonical msgpack of the change as synced
    prev_hash  {bytes} NOT NULL,
    hash       {bytes} NOT NULL,
    created_at {real} NOT NULL
);
CREATE INDEX IF NOT EXISTS changes_created_at ON changes (created_at);
CREATE TABLE IF NOT EXISTS offers (
    id      TEXT PRIMARY KEY,
    body    {bytes} NOT NULL,
    regions {text_list} NOT NULL DEFAULT {empty_list},  -- the offer's regions, so a snapshot reads only its own
    version {bigint} NOT NULL
);
CREATE TABLE IF NOT EXISTS models (
    version    TEXT PRIMARY KEY,
    sha256     TEXT NOT NULL,
    manifest   TEXT NOT NULL,
    created_at {real} NOT NULL,
    state      TEXT NOT NULL DEFAULT 'published'  -- published, candidate, active or retired (MODEL_STATES)
);
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS experiments (
    id      TEXT PRIMARY KEY,
    body    {bytes} NOT NULL,
    version {bigint} NOT NULL
);
CREATE TABLE IF NOT EXISTS state_digests (
    scope TEXT PRIMARY KEY,  -- a market code, or "*" for the global state (model, experiments)
    lanes {bytes} NOT NULL   -- the scope's LtHash16 vector (digest.py)
);
CREATE TABLE IF NOT EXISTS audit_log (
    id     {serial_key},
    ts     {real} NOT NULL,
    actor  TEXT,               -- "admin:<first 8 hex of sha256(token)>", or NULL when refused (no valid token)
    method TEXT NOT NULL,
    path   TEXT NOT NULL,
    target TEXT,
    peer   TEXT,
    status INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_log_ts ON audit_log (ts);
CREATE TABLE IF NOT EXISTS pipeline_decisions (
    id       {serial_key},
    ts       {real} NOT NULL,
    pipeline TEXT NOT NULL,
    round    TEXT NOT NULL,
    step     TEXT NOT NULL,      -- train, gate, parity, publish, experiment, watch, promote, stop, ...
    decision TEXT NOT NULL,      -- what was decided (passed, failed, promoted, stopped, waiting, ...)
    evidence TEXT NOT NULL       -- JSON: the figures the decision rests on
);
CREATE INDEX IF NOT EXISTS pipeline_decisions_round ON pipeline_decisions (pipeline, round);
CREATE TABLE IF NOT EXISTS profiles (
    pseudonym  TEXT PRIMARY KEY,   -- the keyed hash of the shopper id (the id itself never reaches the origin)
    summary    {bytes} NOT NULL,   -- the encoded summary as synced (origin_sync/wire/profiles.py)
    summary_ts {bigint} NOT NULL,  -- the newest event it counts
    regions    {text_list} NOT NULL,  -- the markets the shopper was seen in: the edges that get the summary
    version    {bigint}            -- the change that shipped it, NULL while it concerns no region
);
CREATE TABLE IF NOT EXISTS profile_events (
    pseudonym TEXT NOT NULL,
    event_key TEXT NOT NULL,   -- unique per shopper (an order line, an ingested event): a re-import adds nothing
    kind      TEXT NOT NULL,
    item      TEXT NOT NULL,
    ts        {bigint} NOT NULL,
    region    TEXT NOT NULL,   -- "" where the event names no market
    PRIMARY KEY (pseudonym, event_key)
);
CREATE TABLE IF NOT EXISTS profile_erasures (
    pseudonym TEXT PRIMARY KEY,
    erased_at {real} NOT NULL  -- no event of the shopper from before it is folded again (a late batch, a re-import)
)
"""
# Where model blobs live in the database as well as on disk (PostgreSQL: several origins share no disk).
_BLOBS = "CREATE TABLE IF NOT EXISTS blobs (sha256 TEXT PRIMARY KEY, data {bytes} NOT NULL)"


def statements(conn: Connection) -> list[str]:
    """The schema in the connection's column types, one statement each."""
    tables = _TABLES + (";" + _BLOBS if conn.blobs_in_database else "")
    return [s.strip() for s in tables.format(**conn.types).split(";") if s.strip()]


async def create(conn: Connection) -> None:
    """Create what is missing and migrate an older database; call inside a write transaction."""
    await conn.lock(SCHEMA_LOCK)  # several origins may start at once: one creates, the others find it made
    for statement in statements(conn):
        await conn.execute(statement)
    await conn.execute(
        "INSERT INTO log_head(id, version, hash, floor, floor_hash) VALUES (1, 0, $1, 0, $1) "
        "ON CONFLICT (id) DO NOTHING",
        GENESIS_HASH,
    )
    await _migrate_model_states(conn)
    await _migrate_offer_regions(conn)


async def _migrate_model_states(conn: Connection) -> None:
    """A database made before model states has no models.state: add it. Until then every publish activated, so the
    model named active is `active` and every other one `retired`."""
    if await conn.has_column("models", "state"):
        return
    await conn.execute("ALTER TABLE models ADD COLUMN state TEXT NOT NULL DEFAULT 'published'")
    await conn.execute(
        "UPDATE models SET state = CASE WHEN version = (SELECT value FROM meta WHERE "
        "key = 'active_model') THEN 'active' ELSE 'retired' END"
    )


async def _migrate_offer_regions(conn: Connection) -> None:
    """A SQLite database made before the one SQL path keeps the offers' regions only inside their bodies: copy them
    into offers.regions, which a snapshot selects on."""
    if await conn.has_column("offers", "regions"):
        return
    await conn.execute(
        "ALTER TABLE offers ADD COLUMN regions {text_list} NOT NULL DEFAULT {empty_list}".format(**conn.types)
    )
    rows = await conn.fetch("SELECT id, body FROM offers")
    await conn.executemany(
        "UPDATE offers SET regions = $1 WHERE id = $2", [(conn.text_list(unpack(r[1])["regions"]), r[0]) for r in rows]
    )
