"""The spool's writer: events appended in memory on the request path, written to the open segment in small batches
by the event loop (group commit for the appends a client waits on), fdatasync'ed by a sync thread. What each
acknowledgement promises is in the package's docstring."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import queue
import threading
import time
from pathlib import Path
from typing import Any

from edgerec.core.files import fsync_directory
from origin_sync.wire.events import encode_frame

from .health import HealthCounters
from .segments import CLOSED_SUFFIX, bytes_in, closed_segments, create_segment, take_slot

log = logging.getLogger("edgerec.events")

ACK_WRITE, ACK_FSYNC = "write", "fsync"  # when an acknowledged append is settled: written, or fdatasync'ed too
ACK_MODES = (ACK_WRITE, ACK_FSYNC)


class NotKept(Exception):
    """The events of an acknowledged append were not written (or, with ack "fsync", not synced): the client must
    not get a 202. `code` is the error code of the answer."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class EventSpool:
    """One process's spool directory (a worker takes a free slot under `<data dir>/events/` with a file lock)."""

    def __init__(
        self,
        root: Path,
        max_bytes: int = 1024 * 1024 * 1024,
        flush_interval_s: float = 0.005,
        sync_interval_s: float = 0.02,
        flush_events: int = 256,
        segment_max_bytes: int = 1024 * 1024,
        segment_max_age_s: float = 1.0,
        max_pending: int = 100_000,
        ack: str = ACK_WRITE,
    ) -> None:
        self.health = HealthCounters()  # shipped with the next batch (shipper.py)
        if ack not in ACK_MODES:
            raise ValueError(f"ack: one of {', '.join(ACK_MODES)}, not {ack!r}")
        self.root = Path(root)
        self.ack = ack
        self.max_bytes = max_bytes
        self.flush_interval_s = flush_interval_s
        self.sync_interval_s = sync_interval_s
        self.flush_events = flush_events
        self.segment_max_bytes = segment_max_bytes
        self.segment_max_age_s = segment_max_age_s
        self.max_pending = max_pending
        self.dropped: collections.Counter = collections.Counter()  # events dropped, by reason
        self.appended = 0
        self.written = 0
        self.shipped = 0
        self.ship_failures = 0
        self._pending: list[list[Any]] = []
        self._full: asyncio.Event | None = None  # set by append when a batch is full (made in run_writer's loop)
        # The futures of acknowledged appends whose rows are in _pending; settled by the flush that writes them (or,
        # with ack "fsync", by the sync thread once that write is fdatasync'ed).
        self._waiters: list[asyncio.Future[None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None  # the writer's, while it runs (acked appends need it)
        self._flush_scheduled = False  # a flush is queued for the end of this loop pass (a client waits)
        # Only the event loop writes to and rolls segments; the sync thread only fdatasyncs and closes what it is
        # handed (("sync", fd, directory_too, waiters) or ("close", fd, path, ())), so neither waits for the other.
        self._sync_requests: queue.SimpleQueue[tuple[str, int, Any, list[asyncio.Future[None]]] | None] = (
            queue.SimpleQueue()
        )
        self._disk_lock = threading.Lock()  # bytes_on_disk: grown by the event loop, shrunk after shipping
        self._segment: int | None = None  # the open segment's file descriptor
        self._segment_path: Path | None = None
        self._segment_new = False  # its directory entry is not fsynced yet
        self._unsynced_since: float | None = None  # monotonic time of the first write not yet handed to sync
        self._segment_opened = 0.0
        self._segment_bytes = 0
        self.bytes_on_disk = 0
        self._lock_fd: int | None = None
        self.directory: Path | None = None

    # -- request path -------------------------------------------------------------------------------

    def append(self, row: list[Any]) -> bool:
        """Queue one event (its values in EVENT_FIELDS order) for the next batch written; False (and counted) when
        the spool is full."""
        if self.bytes_on_disk >= self.max_bytes:
            self.dropped["spool_full"] += 1
            return False
        pending = self._pending
        if len(pending) >= self.max_pending:
            self.dropped["backlog"] += 1
            return False
        pending.append(row)
        self.appended += 1
        if len(pending) == self.flush_events and self._full is not None:
            self._full.set()
        return True

    def append_acked(self, rows: list[list[Any]]) -> asyncio.Future[None] | None:
        """Queue a client's events for the next batch, all or none, and return a future that is settled when the
        batch holding them is written (ack "write") or written and fdatasync'ed (ack "fsync"); it fails with NotKept
        when that write or sync fails. None (and counted) when the spool has no room for them. Raises NotKept when
        the writer is not running (not started, or stopping). The flush is scheduled at once, for the end of this
        event loop pass: the acknowledged appends of one pass share one write."""
        loop = self._loop
        if loop is None:
            raise NotKept("spool_stopping", "this edge is not taking events now (its spool writer is stopped)")
        count = len(rows)
        if self.bytes_on_disk >= self.max_bytes:
            self.dropped["spool_full"] += count
            return None
        pending = self._pending
        if len(pending) + count > self.max_pending:
            self.dropped["backlog"] += count
            return None
        pending.extend(rows)
        self.appended += count
        waiter = loop.create_future()
        self._waiters.append(waiter)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self._flush_for_waiters)
        return waiter

    def has_room(self) -> bool:
        return self.bytes_on_disk < self.max_bytes and len(self._pending) < self.max_pending

    @staticmethod
    def _settle(waiters: list[asyncio.Future[None]], failure: tuple[str, str] | None = None) -> None:
        """Resolve the waiters (on the event loop), or fail them with NotKept(*failure). A waiter whose request was
        cancelled (the client went away) is already done and skipped."""
        for waiter in waiters:
            if not waiter.done():
                if failure is None:
                    waiter.set_result(None)
                else:
                    waiter.set_exception(NotKept(*failure))

    # -- disk ---------------------------------------------------------------------------------------

    def open(self) -> None:
        """Take a free slot directory, and close every segment a previous process left open (after a crash)."""
        self._lock_fd, self.directory = take_slot(self.root)
        self.bytes_on_disk = bytes_in(self.directory)

    def _new_segment(self) -> None:
        assert self.directory is not None
        self._segment_path, self._segment = create_segment(self.directory)
        self._segment_new = True
        self._segment_opened = time.monotonic()
        self._segment_bytes = 0

    def _fsync_dir(self) -> None:
        assert self.directory is not None
        fsync_directory(self.directory)

    def _write_batch(self, rows: list[list[Any]]) -> None:
        frame = memoryview(encode_frame(rows))
        if self._segment is None:
            self._new_segment()
        assert self._segment is not None
        written = 0
        while written < len(frame):  # a write to a regular file may be short (disk nearly full)
            written += os.write(self._segment, frame[written:])
        if self._unsynced_since is None:
            self._unsynced_since = time.monotonic()
        self._segment_bytes += len(frame)
        with self._disk_lock:
            self.bytes_on_disk += len(frame)
        self.written += len(rows)

    def _request_sync(self, waiters: list[asyncio.Future[None]] | None = None) -> None:
        if self._segment is not None and (self._unsynced_since is not None or waiters):
            self._sync_requests.put(("sync", self._segment, self._segment_new, waiters or []))
            self._segment_new = False
            self._unsynced_since = None

    def _close_segment(self) -> None:
        """Hand the open segment to the sync thread, which syncs, closes and renames it for the shipper."""
        if self._segment is None:
            return
        self._sync_requests.put(("close", self._segment, self._segment_path, []))
        self._segment = self._segment_path = None
        self._segment_new = False
        self._unsynced_since = None

    def _sync_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """The sync thread: blocks on its queue (no wake-ups when idle), fdatasyncs, closes and renames. The sync
        requests queued for one segment while it was busy share one fdatasync (group commit with ack "fsync"); their
        waiters are settled back on the event loop."""
        while True:
            requests = [self._sync_requests.get()]
            with contextlib.suppress(queue.Empty):
                while requests[-1] is not None:
                    requests.append(self._sync_requests.get_nowait())
            i = 0
            while i < len(requests):
                request = requests[i]
                if request is None:  # the last one queued: everything before it is done
                    return
                action, fd, detail, waiters = request
                i += 1
                if action == "sync":
                    # The syncs right after it are of the same segment (a close always comes between two segments,
                    # so a reused descriptor number is never mistaken for the same file).
                    while (
                        i < len(requests)
                        and requests[i] is not None
                        and requests[i][0] == "sync"
                        and requests[i][1] == fd
                    ):
                        detail = detail or requests[i][2]
                        waiters = waiters + requests[i][3]
                        i += 1
                failure = self._sync_one(action, fd, detail)
                if waiters or failure is not None:
                    with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
                        loop.call_soon_threadsafe(self._synced, fd, waiters, failure)

    def _sync_one(self, action: str, fd: int, detail: Any) -> tuple[str, str] | None:
        try:
            os.fdatasync(fd)
            if action == "sync":
                if detail:  # a new segment: its directory entry must survive a crash too
                    self._fsync_dir()
                return None
            os.close(fd)
            detail.rename(detail.with_suffix(CLOSED_SUFFIX))
            self._fsync_dir()
            return None
        except OSError as exc:
            log.error("could not sync or close event segment (%s); it is closed at the next start", exc)
            if action == "close":
                with contextlib.suppress(OSError):
                    os.close(fd)
            return "spool_sync_failed", f"the edge could not sync its event spool to disk ({exc.strerror or exc})"

    def _synced(self, fd: int, waiters: list[asyncio.Future[None]], failure: tuple[str, str] | None) -> None:
        """On the event loop, after the sync thread is done with a request: settle its waiters; after a failed sync
        the segment is not trusted any more, the next batch goes to a new one."""
        self._settle(waiters, failure)
        if failure is not None and self._segment == fd:
            self._close_segment()

    def flush(self) -> None:
        """Write what is pending now to the open segment (one write(2); the event loop's step every 5 ms, or at the
        end of a pass in which a client waits), and settle the waiters of that write (ack "write") or hand them to
        the sync thread with an fdatasync of it (ack "fsync")."""
        rows, self._pending = self._pending, []
        waiters, self._waiters = self._waiters, []
        if not rows:
            return
        try:
            self._write_batch(rows)
        except OSError as exc:
            self.dropped["disk_error"] += len(rows)
            log.error("could not write %d events to the spool (%s); dropped", len(rows), exc)
            # A failed write may have left part of a frame: end the segment there (the shipper sends the whole
            # frames before it), and write the next batch to a new one.
            self._close_segment()
            self._settle(
                waiters,
                ("spool_write_failed", f"the edge could not write the events to its spool ({exc.strerror or exc})"),
            )
            return
        except BaseException:
            self._settle(waiters, ("spool_write_failed", "the edge could not write the events to its spool"))
            raise
        if not waiters:
            return
        if self.ack == ACK_FSYNC:
            self._request_sync(waiters)
        else:
            self._settle(waiters)

    def _flush_for_waiters(self) -> None:
        self._flush_scheduled = False
        if self._loop is not None:  # else the writer's last step has written (or will write) them
            self.flush()

    def _step(self, stopping: bool = False) -> None:
        self.flush()
        now = time.monotonic()
        if self._segment is not None and (
            stopping
            or self._segment_bytes >= self.segment_max_bytes
            or now - self._segment_opened >= self.segment_max_age_s
        ):
            self._close_segment()
        elif self._unsynced_since is not None and now - self._unsynced_since >= self.sync_interval_s:
            self._request_sync()

    async def run_writer(self) -> None:
        """Until cancelled: write pending events every flush interval (at once when a batch is full), roll
        segments by size and age so that the shipper gets them within about a second, and hand fdatasyncs to the
        sync thread. A clean stop (SIGTERM) loses nothing: what is pending is written and the segment closed, every
        waiting append is settled (resolved once written and synced, or failed), and later ones fail at once."""
        self._full = asyncio.Event()
        loop = asyncio.get_running_loop()
        syncer = threading.Thread(target=self._sync_loop, args=(loop,), name="edgerec-spool-sync", daemon=True)
        syncer.start()
        self._loop, self._flush_scheduled = loop, False
        try:
            while True:
                with contextlib.suppress(asyncio.TimeoutError):
                    async with asyncio.timeout(self.flush_interval_s):
                        await self._full.wait()
                self._full.clear()
                self._step()
        finally:
            self._loop = None  # acked appends from here on fail at once
            try:
                self._step(stopping=True)
            finally:
                self._sync_requests.put(None)
                # The sync thread queues its last settlements on this loop before it ends, so they have run when
                # the join's result arrives (queued after them): no handler is left waiting when the writer is gone.
                await asyncio.to_thread(syncer.join)
                self._settle(self._waiters, ("spool_stopping", "this edge stopped before writing the events"))
                self._waiters = []

    def closed_segments(self) -> list[Path]:
        assert self.directory is not None
        return closed_segments(self.directory)

    def release(self, path: Path, suffix: str | None = None) -> None:
        """A shipped segment is deleted (or, with a suffix, set aside), and no longer counts against max_bytes."""
        size = path.stat().st_size
        if suffix is None:
            path.unlink()
        else:
            path.rename(path.with_suffix(suffix))
        with self._disk_lock:
            self.bytes_on_disk = max(0, self.bytes_on_disk - size)
