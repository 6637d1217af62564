"""The spool's files: one slot directory per process (taken with a file lock), its segment files (open while
written, closed for the shipper), and reading a segment's events back."""

from __future__ import annotations

import fcntl
import os
import secrets
import time
from pathlib import Path
from typing import Any

from origin_sync.wire.events import EVENT_FIELDS, complete_frames, decode_frames

OPEN_SUFFIX, CLOSED_SUFFIX = ".open", ".seg"


def read_segment(path: Path) -> tuple[list[dict[str, Any]], bool]:
    """The events of a segment (as maps), and whether it ended in a torn frame (a write cut short by a crash)."""
    data = path.read_bytes()
    whole, _, torn = complete_frames(data)
    events = [dict(zip(EVENT_FIELDS, e)) if isinstance(e, list) else e for e in decode_frames(data[:whole])]
    return events, torn


def take_slot(root: Path) -> tuple[int, Path]:
    """Take a free slot directory under `root` (its lock file's descriptor, held for the process's life, and the
    directory), and close every segment a previous process left open there (after a crash)."""
    root.mkdir(parents=True, exist_ok=True)
    for slot in range(1024):
        directory = root / f"w{slot}"
        directory.mkdir(exist_ok=True)
        # The lock file is opened read-only: flock needs no write access.
        lock_path = directory / ".lock"
        if not lock_path.exists():
            lock_path.touch(mode=0o600)
        fd = os.open(lock_path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        break
    else:
        raise RuntimeError(f"no free event spool slot under {root}")
    for path in sorted(directory.glob(f"*{OPEN_SUFFIX}")):
        path.rename(path.with_suffix(CLOSED_SUFFIX))
    return fd, directory


def create_segment(directory: Path) -> tuple[Path, int]:
    """A new open segment, named so that segments sort in the order they were written: (path, descriptor)."""
    name = f"{time.time_ns():020d}-{secrets.token_hex(6)}"
    path = directory / f"{name}{OPEN_SUFFIX}"
    return path, os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o600)


def closed_segments(directory: Path) -> list[Path]:
    return sorted(directory.glob(f"*{CLOSED_SUFFIX}"))


def bytes_in(directory: Path) -> int:
    """What the closed segments of a slot hold on disk."""
    return sum(p.stat().st_size for p in directory.glob(f"*{CLOSED_SUFFIX}"))
