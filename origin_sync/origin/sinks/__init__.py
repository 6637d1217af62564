"""Where the origin puts the events edges ship: one `EventSink` interface (`base`); the SQL sink on SQLite (the
embedded default) or PostgreSQL (the store's database), one code path over the store's dialect layer (`sql`);
NATS JetStream, a stream per event kind (`nats`); several at once (`fanout`); and the report queries (`reports`).

Exactly once: an edge's batch id is recorded in the SQL sink's ledger in the same transaction as its events, so a
retried batch is acknowledged without being stored twice; NATS messages carry `Nats-Msg-Id` (the event id) and
the streams deduplicate within their window.
"""

from origin_sync.origin.sinks.base import EventSink
from origin_sync.origin.sinks.fanout import FanoutSink, open_sink
from origin_sync.origin.sinks.nats import NatsEventSink
from origin_sync.origin.sinks.reports import unattributed_feedback, unresolved_request_ids
from origin_sync.origin.sinks.sql import PostgresEventSink, SQLEventSink, SQLiteEventSink

__all__ = [
    "EventSink",
    "FanoutSink",
    "NatsEventSink",
    "PostgresEventSink",
    "SQLEventSink",
    "SQLiteEventSink",
    "open_sink",
    "unattributed_feedback",
    "unresolved_request_ids",
]
