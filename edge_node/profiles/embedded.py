"""The embedded profile store, the edge's default: encoded profiles in memory under a byte budget (LRU), in front
of an encrypted SQLite file in the edge's data directory that survives a restart.

A `get` that finds the profile in memory decodes it without any I/O (µs: the record's msgpack form is held, about
a tenth of the memory of its decoded objects); a miss reads the file (a primary-key lookup in the page cache, tens
of µs) and keeps the record in memory. `apply_event`, `put_summary` and `erase` write the
file before they return (read-your-writes, and nothing lost to a SIGKILL; see disk.py for a power loss).
Everything but the group fsync and the compaction's copy runs on the event loop's thread, so no two coroutines
ever interleave inside one update.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import sqlite3
import time
from pathlib import Path
from typing import Callable, Generic, TypeVar

from .crypto import RecordCipher, derive_profile_key
from .disk import ProfileFile
from .interface import CorruptRecord, ProfileCodec, ProfileEvent, StoreStats, worth_logging
from .memory import MemoryTier

R = TypeVar("R")
log = logging.getLogger("edgerec.profiles")

DEFAULT_BUDGET_BYTES = 256 * 1024 * 1024
DEFAULT_RETENTION_S = 365 * 86400.0
DEFAULT_FSYNC_INTERVAL_S = 1.0


class EmbeddedProfileStore(Generic[R]):
    """Profiles in `directory` (one process at a time: a second opener gets StoreLocked).

    `budget_bytes` bounds the memory tier (accounted as encoded record + key bytes; past it the least recently
    used profiles leave memory and stay on disk). `retention_s`: a profile not written for that long is a miss,
    and compaction drops it from disk. `compact_interval_s` > 0 runs `compact` on that cadence.
    """

    def __init__(
        self,
        directory: Path,
        secret: str,
        codec: ProfileCodec[R],
        *,
        budget_bytes: int = DEFAULT_BUDGET_BYTES,
        retention_s: float = DEFAULT_RETENTION_S,
        fsync_interval_s: float = DEFAULT_FSYNC_INTERVAL_S,
        compact_interval_s: float = 0.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if retention_s <= 0:
            raise ValueError("profile retention is a positive number of seconds")
        self.codec = codec
        self.retention_s = retention_s
        self.stats = StoreStats()
        self._clock = clock
        self._cipher = RecordCipher(derive_profile_key(secret))
        self._memory = MemoryTier(budget_bytes)  # each record's plaintext msgpack form
        self._file = ProfileFile(Path(directory), self._cipher, fsync_interval_s)
        self.stats.corrupt_files = self._file.corrupt_files
        self.stats.started_empty = self._file.started_empty
        self._changed_while_compacting: set[str] | None = None
        self._worker = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="edgerec-profiles")
        self._compact_interval_s = compact_interval_s
        self._background: asyncio.Task[None] | None = None
        self._compacting: asyncio.Future[None] | None = None

    @property
    def directory(self) -> Path:
        return self._file.directory

    @property
    def budget_bytes(self) -> int:
        return self._memory.budget_bytes

    def held(self) -> tuple[int, int]:
        return len(self._memory), self._memory.bytes_held

    def stored(self) -> int:
        """Profiles on disk (a count over the file: for tests and reports, not the request path)."""
        return self._file.count()

    def start(self) -> None:
        """Start the group fsync (and the compaction cadence) on the running loop; `get` and the writes work
        without it, but then only `close` fsyncs."""
        if self._background is None:
            self._background = asyncio.get_running_loop().create_task(self._maintain())

    async def get(self, pseudonym: str) -> R | None:
        return self.stats.looked_up(self._current(pseudonym))

    async def apply_event(self, pseudonym: str, event: ProfileEvent) -> R:
        current = self._current(pseudonym)
        record = self.codec.apply(self.codec.empty() if current is None else current, event)
        self._write(pseudonym, record)
        return record

    async def put_summary(self, pseudonym: str, summary: R, summary_ts: float) -> R:
        record = self.codec.merge(self._current(pseudonym), summary, summary_ts)
        self._write(pseudonym, record)
        return record

    async def erase(self, pseudonym: str) -> None:
        """Gone from memory and from the file's live rows now; from every byte on disk after `compact`."""
        self._memory.pop(pseudonym)
        self._note_change(pseudonym)
        self._file.delete(pseudonym)
        self.stats.erased += 1

    async def compact(self) -> int:
        """Rebuild the file without the erased and the expired records (a fresh copy built in a thread from a
        read snapshot while writes go on, then swapped in); returns the expired records dropped. Afterwards no
        file under the directory holds a byte of a record that is not live (nor a moved-aside file)."""
        if self._compacting is not None:
            await asyncio.shield(self._compacting)
            return 0
        loop = asyncio.get_running_loop()
        self._compacting = loop.create_future()
        self._changed_while_compacting = set()
        try:
            cutoff = self._clock() - self.retention_s
            expired = await loop.run_in_executor(self._worker, self._file.build_compacted, cutoff)
            self._file.swap_in(self._changed_while_compacting)
            self._memory.drop_older_than(cutoff)
            self.stats.expired += expired
            self.stats.compactions += 1
            return expired
        finally:
            self._changed_while_compacting = None
            self._compacting.set_result(None)
            self._compacting = None

    async def close(self) -> None:
        if self._background is not None:
            self._background.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._background
            self._background = None
        if self._compacting is not None:
            await asyncio.shield(self._compacting)
        self._worker.shutdown(wait=True)
        self._file.close()
        self._memory.clear()

    def _current(self, pseudonym: str) -> R | None:
        held = self._memory.get(pseudonym)
        if held is not None and self._clock() - held.updated < self.retention_s:
            try:
                return self.codec.decode(held.record)
            except CorruptRecord:  # cannot happen to bytes this store encoded; read the file again if it does
                self._memory.pop(pseudonym)
        return self._load(pseudonym)

    def _load(self, pseudonym: str) -> R | None:
        try:
            row = self._file.read(pseudonym)
        except sqlite3.DatabaseError as exc:
            self._corrupt(pseudonym, f"unreadable row ({exc})", delete=False)
            return None
        if row is None:
            return None
        sealed, updated = row
        if self._clock() - updated >= self.retention_s:
            self._memory.pop(pseudonym)
            self._note_change(pseudonym)
            self._file.delete(pseudonym)
            self.stats.expired += 1
            return None
        try:
            plaintext = self._cipher.open(pseudonym, sealed)
            record = self.codec.decode(plaintext)
        except CorruptRecord as exc:
            self._corrupt(pseudonym, str(exc), delete=True)
            return None
        self.stats.evictions += self._memory.put(pseudonym, plaintext, len(plaintext), updated)
        return record

    def _write(self, pseudonym: str, record: R) -> None:
        encoded = self.codec.encode(record)
        now = self._clock()
        self._note_change(pseudonym)
        try:
            self._file.write(pseudonym, self._cipher.seal(pseudonym, encoded), now)
        except sqlite3.Error as exc:
            # Kept in memory (the shopper still sees it); the event itself is in the event spool and comes back
            # through the origin's sync.
            self.stats.write_failures += 1
            log.error("could not write a profile to %s (%s); kept in memory only", self._file.path, exc)
        self.stats.evictions += self._memory.put(pseudonym, encoded, len(encoded), now)

    def _note_change(self, pseudonym: str) -> None:
        if self._changed_while_compacting is not None:
            self._changed_while_compacting.add(pseudonym)

    def _corrupt(self, pseudonym: str, reason: str, delete: bool) -> None:
        self.stats.corrupt_records += 1
        count = self.stats.corrupt_records
        if worth_logging(count):
            # The pseudonym is not logged: a log line would outlive the shopper's erasure.
            log.error(
                "profile record refused (%s); answered as a miss%s [%d corrupt records so far]",
                reason,
                " and deleted" if delete else "",
                count,
            )
        if delete:
            self._note_change(pseudonym)
            with contextlib.suppress(sqlite3.Error):
                self._file.delete(pseudonym)

    async def _maintain(self) -> None:
        loop = asyncio.get_running_loop()
        interval = self._file.fsync_interval_s or 1.0
        last_compaction = loop.time()
        while True:
            await asyncio.sleep(interval)
            try:
                if self._file.fsync_interval_s > 0 and self._file.unsynced:
                    await loop.run_in_executor(self._worker, self._file.checkpoint)
                if self._compact_interval_s > 0 and loop.time() - last_compaction >= self._compact_interval_s:
                    last_compaction = loop.time()
                    await self.compact()
            except (sqlite3.Error, OSError) as exc:
                log.error("profile store maintenance failed (%s); retried in %.1fs", exc, interval)
