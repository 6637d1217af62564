"""The edge's durable event spool: events appended in memory on the request path, written to segment files in
small fsynced batches, shipped to the origin in idempotent msgpack batches, deleted only once acknowledged.

Bounds: a batch is written and fsynced at most `flush_interval_s` (5 ms) after its first event, or as soon as
`flush_events` (256) are pending, so SIGKILL loses at most that window. The spool holds at most `max_bytes` on
disk (and `max_pending` events in memory); past that, new events are dropped (the oldest are kept, they are
the ones the origin is waiting for) and counted in `edgerec_events_dropped_total{reason}`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import fcntl
import logging
import os
import random
import secrets
import ssl
import struct
import time
import zlib
from pathlib import Path
from typing import Any

import aiohttp
import msgpack

from origin_sync.events import encode_batch

log = logging.getLogger("edgerec.events")

_FRAME = struct.Struct(">II")  # payload length, crc32 of the payload (zlib-compressed msgpack list of events)
OPEN_SUFFIX, CLOSED_SUFFIX = ".open", ".seg"


def read_segment(path: Path) -> tuple[list[dict[str, Any]], bool]:
    """The events of a segment, and whether it ended in a torn frame (a write cut short by a crash)."""
    data = path.read_bytes()
    events: list[dict[str, Any]] = []
    offset = 0
    while offset < len(data):
        if offset + _FRAME.size > len(data):
            return events, True
        length, crc = _FRAME.unpack_from(data, offset)
        payload = data[offset + _FRAME.size: offset + _FRAME.size + length]
        if len(payload) != length or zlib.crc32(payload) != crc:
            return events, True
        events.extend(msgpack.unpackb(zlib.decompress(payload), raw=False))
        offset += _FRAME.size + length
    return events, False


class EventSpool:
    """One process's spool directory (a worker takes a free slot under `<data dir>/events/` with a file lock)."""

    def __init__(self, root: Path, max_bytes: int = 1024 * 1024 * 1024, flush_interval_s: float = 0.005,
                 flush_events: int = 256, segment_max_bytes: int = 1024 * 1024, segment_max_age_s: float = 1.0,
                 max_pending: int = 100_000) -> None:
        self.root = Path(root)
        self.max_bytes = max_bytes
        self.flush_interval_s = flush_interval_s
        self.flush_events = flush_events
        self.segment_max_bytes = segment_max_bytes
        self.segment_max_age_s = segment_max_age_s
        self.max_pending = max_pending
        self.dropped: collections.Counter = collections.Counter()  # events dropped, by reason
        self.appended = 0
        self.written = 0
        self.shipped = 0
        self.ship_failures = 0
        self._pending: list[dict[str, Any]] = []
        self._full = asyncio.Event()
        self._segment: bool | None = None  # a segment is open (being appended to)
        self._segment_path: Path | None = None
        self._segment_opened = 0.0
        self._segment_bytes = 0
        self.bytes_on_disk = 0
        self._lock_fd: int | None = None
        self.directory: Path | None = None

    # -- request path -------------------------------------------------------------------------------

    def append(self, event: dict[str, Any]) -> bool:
        """Queue one event for the next fsynced batch; False (and counted) when the spool is full."""
        if self.bytes_on_disk >= self.max_bytes:
            self.dropped["spool_full"] += 1
            return False
        pending = self._pending
        if len(pending) >= self.max_pending:
            self.dropped["backlog"] += 1
            return False
        pending.append(event)
        self.appended += 1
        if len(pending) == self.flush_events:
            self._full.set()
        return True

    def has_room(self) -> bool:
        return self.bytes_on_disk < self.max_bytes and len(self._pending) < self.max_pending

    # -- disk ---------------------------------------------------------------------------------------

    def open(self) -> None:
        """Take a free slot directory, and close every segment a previous process left open (after a crash)."""
        self.root.mkdir(parents=True, exist_ok=True)
        for slot in range(1024):
            directory = self.root / f"w{slot}"
            directory.mkdir(exist_ok=True)
            # Read-only: flock needs no write access, and no file stays open for writing (a remount stays possible).
            lock_path = directory / ".lock"
            if not lock_path.exists():
                lock_path.touch(mode=0o600)
            fd = os.open(lock_path, os.O_RDONLY)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            self._lock_fd, self.directory = fd, directory
            break
        else:
            raise RuntimeError(f"no free event spool slot under {self.root}")
        for path in sorted(self.directory.glob(f"*{OPEN_SUFFIX}")):
            path.rename(path.with_suffix(CLOSED_SUFFIX))
        self.bytes_on_disk = sum(p.stat().st_size for p in self.directory.glob(f"*{CLOSED_SUFFIX}"))

    def _new_segment(self) -> None:
        assert self.directory is not None
        name = f"{time.time_ns():020d}-{secrets.token_hex(6)}"
        self._segment_path = self.directory / f"{name}{OPEN_SUFFIX}"
        self._segment_path.touch(mode=0o600)
        self._segment = True
        self._segment_opened = time.monotonic()
        self._segment_bytes = 0
        self._fsync_dir()

    def _fsync_dir(self) -> None:
        assert self.directory is not None
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _write_batch(self, events: list[dict[str, Any]]) -> None:
        payload = zlib.compress(msgpack.packb(events, use_bin_type=True), 1)  # offer ids repeat: ~3x smaller
        if self._segment is None:
            self._new_segment()
        frame = _FRAME.pack(len(payload), zlib.crc32(payload)) + payload
        assert self._segment_path is not None
        # Opened per batch (every few ms at most), so that no file of the spool stays open for writing.
        with open(self._segment_path, "ab") as segment:
            segment.write(frame)
            segment.flush()
            os.fsync(segment.fileno())
        self._segment_bytes += len(frame)
        self.bytes_on_disk += len(frame)
        self.written += len(events)

    def _close_segment(self) -> None:
        if self._segment is None:
            return
        assert self._segment_path is not None
        self._segment_path.rename(self._segment_path.with_suffix(CLOSED_SUFFIX))
        self._fsync_dir()
        self._segment = self._segment_path = None

    async def flush(self) -> None:
        batch, self._pending = self._pending, []
        if batch:
            try:
                await asyncio.to_thread(self._write_batch, batch)
            except OSError as exc:
                self.dropped["disk_error"] += len(batch)
                log.error("could not write %d events to the spool (%s); dropped", len(batch), exc)

    async def run_writer(self) -> None:
        """Write pending events every flush interval (or at once when a batch is full); roll segments by size
        and age so that the shipper gets them within about a second."""
        try:
            while True:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._full.wait(), self.flush_interval_s)
                self._full.clear()
                await self.flush()
                if self._segment is not None and (self._segment_bytes >= self.segment_max_bytes or
                                                  time.monotonic() - self._segment_opened >= self.segment_max_age_s):
                    await asyncio.to_thread(self._close_segment)
        finally:
            # A clean stop (SIGTERM) loses nothing: what is pending is written and the segment closed.
            with contextlib.suppress(OSError):
                batch, self._pending = self._pending, []
                if batch:
                    self._write_batch(batch)
                self._close_segment()

    def closed_segments(self) -> list[Path]:
        assert self.directory is not None
        return sorted(self.directory.glob(f"*{CLOSED_SUFFIX}"))

    # -- shipping -----------------------------------------------------------------------------------

    async def run_shipper(self, origin_url: str, token: str, regions: tuple[str, ...],
                          backoff_base_s: float = 0.2, backoff_max_s: float = 30.0, idle_s: float = 0.2,
                          ssl_context: ssl.SSLContext | None = None) -> None:
        """Ship closed segments in order, one batch each (its id is the segment's name, so a retry after a lost
        acknowledgement is recognised by the origin); delete a segment only after the origin acknowledged it.
        `ssl_context` is the syncer's: the same CA bundle and client certificate."""
        url = f"{origin_url.rstrip('/')}/v1/sync/events"
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/x-msgpack"}
        failures = 0
        connector = aiohttp.TCPConnector(ssl=ssl_context if ssl_context is not None else True)
        async with aiohttp.ClientSession(connector=connector) as session:
            while True:
                segments = self.closed_segments()
                if not segments:
                    await asyncio.sleep(idle_s)
                    continue
                try:
                    for path in segments:
                        await self._ship(session, url, headers, regions, path)
                    failures = 0
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - keep the segment, retry with backoff and full jitter
                    failures += 1
                    self.ship_failures += 1
                    delay = random.uniform(0, min(backoff_max_s, backoff_base_s * 2 ** min(failures, 12)))
                    log.warning("shipping events failed (%s: %s); %d segment(s) kept, retry in %.1fs",
                                type(exc).__name__, str(exc)[:200], len(segments), delay)
                    await asyncio.sleep(delay)

    async def _ship(self, session: aiohttp.ClientSession, url: str, headers: dict[str, str],
                    regions: tuple[str, ...], path: Path) -> None:
        events, torn = await asyncio.to_thread(read_segment, path)
        if torn:
            # Only the last batch written before a crash can be torn: it was never fsynced, never acknowledged.
            self.dropped["torn_write"] += 1
            log.warning("segment %s ends in a torn write (crash before fsync); its complete batches are shipped",
                        path.name)
        if events:
            body = await asyncio.to_thread(encode_batch, path.stem, list(regions), events)
            async with session.post(url, data=body, headers=headers, timeout=aiohttp.ClientTimeout(total=60)) as resp:
                text = (await resp.read())[:300].decode(errors="replace")
                if resp.status == 422:
                    # The origin will never take this batch: set it aside rather than block the ones after it.
                    self.dropped["rejected"] += len(events)
                    log.error("origin refused event batch %s: %s; moved aside", path.stem, text)
                    size = path.stat().st_size
                    path.rename(path.with_suffix(".rejected"))
                    self.bytes_on_disk = max(0, self.bytes_on_disk - size)
                    return
                if resp.status != 200:
                    raise RuntimeError(f"HTTP {resp.status}: {text}")
        size = path.stat().st_size
        path.unlink()
        self.bytes_on_disk = max(0, self.bytes_on_disk - size)
        self.shipped += len(events)
