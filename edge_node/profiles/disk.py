"""The disk tier of the embedded store: one SQLite file (WAL) of sealed records keyed by pseudonym, with the time
each was written; its lock, its checks at open, its group fsync and its online compaction.

Durability: every write is its own commit, appended to the WAL with write(2) before `write` returns, so a SIGKILL
of the process loses nothing. With `fsync_interval_s` > 0 (synchronous=NORMAL, no automatic checkpoint) a
background checkpoint fsyncs the WAL and the database every `fsync_interval_s`: a power loss loses at most the
writes of that window (plus the checkpoint's own duration). With 0, synchronous=FULL fsyncs every commit.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Iterable

from edgerec.core.files import fsync_directory

from .crypto import RecordCipher
from .interface import CorruptRecord

log = logging.getLogger("edgerec.profiles")

FILE_NAME = "profiles.sqlite3"
LOCK_NAME = "profiles.lock"
COMPACT_NAME = FILE_NAME + ".compact"
CORRUPT_MARK = ".corrupt-"
_SIDE_FILES = ("-wal", "-shm", "-journal")
_KEY_CHECK = "key-check"  # a sealed canary: a file written under another key is refused at open, not read as noise
_KEY_CHECK_TEXT = b"edgerec profile store"
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS profiles (pseudonym TEXT PRIMARY KEY, updated REAL NOT NULL, record BLOB NOT NULL)",
    "CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value BLOB NOT NULL)",
)


class StoreLocked(RuntimeError):
    """Another process holds the store directory: two writers would serve diverging memory copies."""


class CorruptFile(Exception):
    """The store file fails its checks at open."""


def _connect(path: Path) -> sqlite3.Connection:
    con = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=5.0)
    # Deleted rows are overwritten with zeros, so an erased pseudonym's bytes do not linger in free pages.
    con.execute("PRAGMA secure_delete=ON")
    return con


class ProfileFile:
    """The store file, used from the event loop's thread; `checkpoint` and `build_compacted` run in one worker
    thread and share `_thread_lock` with `swap_in`, so no worker connection is open across a swap."""

    def __init__(self, directory: Path, cipher: RecordCipher, fsync_interval_s: float) -> None:
        self.directory = Path(directory)
        self.path = self.directory / FILE_NAME
        self.fsync_interval_s = fsync_interval_s
        self.unsynced = False
        self.corrupt_files = 0
        self.started_empty = not self.path.exists()  # or, below, refused and moved aside
        self._cipher = cipher
        self._thread_lock = threading.Lock()
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(self.directory / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise StoreLocked(f"another process holds the profile store in {self.directory}") from None
        self._remove_compaction_copy()  # left by a compaction cut short (a crash): it may hold erased rows
        try:
            self._con = self._open_checked()
        except CorruptFile as exc:
            moved = self._move_aside()
            self.corrupt_files += 1
            self.started_empty = True
            log.error(
                "profile store %s refused (%s); moved aside to %s, starting empty (profiles come back with "
                "new events and the origin's sync)",
                self.path,
                exc,
                moved.name,
            )
            self._con = self._open_checked()

    def _open_checked(self) -> sqlite3.Connection:
        try:
            con = _connect(self.path)
        except sqlite3.DatabaseError as exc:
            raise CorruptFile(f"not a readable SQLite database: {exc}") from None
        try:
            self._check(con)
        except CorruptRecord:
            con.close()
            raise CorruptFile("written under another key (EDGEREC_PSEUDONYM_KEY changed?)") from None
        except sqlite3.DatabaseError as exc:
            con.close()
            raise CorruptFile(f"not a readable SQLite database: {exc}") from None
        except CorruptFile:
            con.close()
            raise
        if self.fsync_interval_s > 0:
            con.execute("PRAGMA synchronous=NORMAL")
            con.execute("PRAGMA wal_autocheckpoint=0")  # the checkpoint (and its fsyncs) runs off the event loop
        else:
            con.execute("PRAGMA synchronous=FULL")
        con.execute("PRAGMA journal_size_limit=67108864")
        return con

    def _check(self, con: sqlite3.Connection) -> None:
        con.execute("PRAGMA journal_mode=WAL")
        check = con.execute("PRAGMA quick_check").fetchone()[0]
        if check != "ok":
            raise CorruptFile(f"integrity check: {check}")
        for statement in _SCHEMA:
            con.execute(statement)
        row = con.execute("SELECT value FROM meta WHERE name = ?", (_KEY_CHECK,)).fetchone()
        if row is None:
            con.execute("INSERT INTO meta VALUES (?, ?)", (_KEY_CHECK, self._cipher.seal(_KEY_CHECK, _KEY_CHECK_TEXT)))
        elif self._cipher.open(_KEY_CHECK, row[0]) != _KEY_CHECK_TEXT:
            raise CorruptFile("key check does not match")

    def _move_aside(self) -> Path:
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        target = self.path.with_name(f"{FILE_NAME}{CORRUPT_MARK}{stamp}")
        for suffix in ("", *_SIDE_FILES):
            source = Path(str(self.path) + suffix)
            if source.exists():  # a WAL beside a new file would be replayed into it: it goes along
                os.replace(source, Path(str(target) + suffix))
        return target

    def moved_aside(self) -> list[Path]:
        return sorted(p for p in self.directory.iterdir() if CORRUPT_MARK in p.name)

    def read(self, pseudonym: str) -> tuple[bytes, float] | None:
        row = self._con.execute("SELECT record, updated FROM profiles WHERE pseudonym = ?", (pseudonym,)).fetchone()
        return None if row is None else (bytes(row[0]), float(row[1]))

    def write(self, pseudonym: str, sealed: bytes, updated: float) -> None:
        self._con.execute("INSERT OR REPLACE INTO profiles VALUES (?, ?, ?)", (pseudonym, updated, sealed))
        self.unsynced = True

    def delete(self, pseudonym: str) -> None:
        self._con.execute("DELETE FROM profiles WHERE pseudonym = ?", (pseudonym,))
        self.unsynced = True

    def count(self) -> int:
        return int(self._con.execute("SELECT count(*) FROM profiles").fetchone()[0])

    def checkpoint(self, truncate: bool = False) -> None:
        """In the worker thread: fsync the WAL, copy it into the database, fsync that (the group fsync)."""
        self.unsynced = False
        with self._thread_lock:
            con = sqlite3.connect(self.path, isolation_level=None, timeout=5.0)
            try:
                con.execute("PRAGMA synchronous=FULL")
                con.execute(f"PRAGMA wal_checkpoint({'TRUNCATE' if truncate else 'PASSIVE'})")
            finally:
                con.close()

    def build_compacted(self, cutoff: float) -> int:
        """In the worker thread: a fresh copy of the file holding the records written at `cutoff` or later, built
        beside it from a read snapshot (the event loop keeps writing meanwhile). Returns the records left out."""
        with self._thread_lock:
            target = self._remove_compaction_copy()
            con = _connect(target)
            try:
                con.execute("PRAGMA journal_mode=DELETE")
                for statement in _SCHEMA:
                    con.execute(statement)
                con.execute("ATTACH DATABASE ? AS old", (str(self.path),))
                con.execute("BEGIN")
                left_out = con.execute("SELECT count(*) FROM old.profiles WHERE updated < ?", (cutoff,)).fetchone()[0]
                con.execute(
                    "INSERT INTO profiles SELECT * FROM old.profiles WHERE updated >= ? ORDER BY pseudonym", (cutoff,)
                )
                con.execute("INSERT INTO meta SELECT * FROM old.meta")
                con.execute("COMMIT")
                con.execute("DETACH DATABASE old")
            except BaseException:
                con.close()
                self._remove_compaction_copy()  # a half-built copy (disk full) holds rows too
                raise
            con.close()
            return int(left_out)

    def _remove_compaction_copy(self) -> Path:
        target = self.directory / COMPACT_NAME
        for suffix in ("", *_SIDE_FILES):
            with contextlib.suppress(FileNotFoundError):
                os.remove(str(target) + suffix)
        return target

    def swap_in(self, changed: Iterable[str]) -> None:
        """In the event loop: carry the records changed while the copy was built into it, and put it in place of
        the file. The old file, its WAL and every byte of the records it no longer holds are gone afterwards."""
        target = self.directory / COMPACT_NAME
        with self._thread_lock:
            con = _connect(target)
            try:
                con.execute("PRAGMA synchronous=OFF")  # one fsync of the whole file below
                con.execute("BEGIN")
                for pseudonym in changed:
                    row = self._con.execute("SELECT * FROM profiles WHERE pseudonym = ?", (pseudonym,)).fetchone()
                    con.execute("DELETE FROM profiles WHERE pseudonym = ?", (pseudonym,))
                    if row is not None:
                        con.execute("INSERT INTO profiles VALUES (?, ?, ?)", row)
                con.execute("COMMIT")
            finally:
                con.close()
            with open(target, "rb+") as copy:
                os.fsync(copy.fileno())
            self._con.close()
            os.replace(target, self.path)
            for suffix in _SIDE_FILES:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(str(self.path) + suffix)
            fsync_directory(self.directory)
            self._con = self._open_checked()
            self.unsynced = False
        for path in self.moved_aside():  # kept for inspection until now: they may hold erased shoppers
            path.unlink()
            log.warning("deleted the moved-aside profile store file %s at compaction", path.name)

    def close(self) -> None:
        with self._thread_lock:
            self._con.close()  # the last connection: checkpoints the WAL into the file and removes it
        os.close(self._lock_fd)
