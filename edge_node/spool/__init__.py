"""The edge's durable event spool (a package: `writer.py` appends and writes, `segments.py` is the files on disk,
`shipper.py` sends them to the origin): events appended in memory on the request path, written to segment files in
small batches by the event loop, fdatasync'ed by a sync thread, shipped to the origin in idempotent msgpack batches,
deleted only once acknowledged.

What a 202 of `POST /v1/events` means (group commit): its events are appended with `append_acked`, and the answer
waits for the batch that holds them. With `ack="write"` (`--events-ack write`, the default) the 202 leaves once that
batch's one write(2) to the segment file returned: the events are in the kernel's page cache, so a SIGKILL of the
edge loses none of them (a crash of the machine may still lose up to about 25 ms). With `ack="fsync"` it leaves once
the segment (and, for a new segment, its directory entry) is fdatasync'ed as well: a crash of the machine loses none.
The first waiting append schedules a flush for the end of the event loop's pass (no 5 ms wait), so the requests
handled in the same pass share one write, and in fsync mode the requests written while an fdatasync runs share the
next one. A write or sync that fails fails its waiters (NotKept: the client gets a 503, never a 202), and a stop
writes what is pending and settles every waiter before the writer returns.

Impressions (`append`) stay asynchronous, as no client waits for them: a batch is written at most
`flush_interval_s` (5 ms) after its first event, or as soon as `flush_events` (256) are pending, so a SIGKILL of the
edge loses at most that window of impressions; the file is fdatasync'ed at most `sync_interval_s` (20 ms) after a
write, so a crash of the machine loses at most about 25 ms of them. The spool holds at most `max_bytes` on disk (and
`max_pending` events in memory); past that, new events are dropped (the oldest are kept, they are the ones the
origin is waiting for) and counted in `edgerec_events_dropped_total{reason}`.

Cost: the request path appends one row (a list in EVENT_FIELDS order) to a list. Every 5 ms (and at the end of a
pass in which a client waits) the event loop packs and compresses what is pending (about 1 µs an event) and writes
it with one write(2) to the page cache; only the fdatasync, which blocks for milliseconds and costs 75-130 µs of
CPU here, runs in a thread, woken at most every 20 ms and only while something is unsynced (at once, with
`ack="fsync"`, when a client waits). (A writer thread waking every 5 ms cost more: each wake-up is a GIL hand-off on
the serving core.) A segment travels to the origin as the frames it holds: the shipper checks their checksums and
sends the bytes, it decodes nothing.
"""

from .segments import CLOSED_SUFFIX, OPEN_SUFFIX, read_segment
from .shipper import run_shipper, ship_remaining
from .writer import ACK_FSYNC, ACK_MODES, ACK_WRITE, EventSpool, NotKept

__all__ = [
    "ACK_FSYNC",
    "ACK_MODES",
    "ACK_WRITE",
    "CLOSED_SUFFIX",
    "OPEN_SUFFIX",
    "EventSpool",
    "NotKept",
    "read_segment",
    "run_shipper",
    "ship_remaining",
]
