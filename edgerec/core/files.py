"""Crash-safe local files: atomic writes (temp, fsync, rename) and content-addressed blob directories."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

_HEX = frozenset("0123456789abcdef")


class NotFound(LookupError):
    """The named offer, model or blob does not exist."""


def write_atomically(path: Path, data: bytes) -> None:
    """Write a file so that readers, and a restart after a crash, see the old or the whole new content."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)  # the rename is durable only once the directory entry is


def fsync_directory(directory: Path) -> None:
    """Make the directory's entries durable: a file created, renamed or removed in it survives a crash."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def is_sha256(value: object) -> bool:
    return isinstance(value, str) and len(value) == 64 and set(value) <= _HEX


class BlobStore:
    """Content-addressed files (model bundles): the name is the sha256 of the bytes."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, sha256: str) -> Path:
        if not is_sha256(sha256):
            raise NotFound(f"not a sha256: {sha256!r}")
        return self.root / sha256

    def put(self, data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        target = self.path(digest)
        if not target.exists():
            write_atomically(target, data)
        return digest

    def get(self, sha256: str) -> bytes:
        """The blob's bytes, checked against their name; a damaged file is removed and reported missing."""
        target = self.path(sha256)
        try:
            data = target.read_bytes()
        except FileNotFoundError:
            raise NotFound(f"no blob {sha256}") from None
        if hashlib.sha256(data).hexdigest() != sha256:
            target.unlink(missing_ok=True)
            raise NotFound(f"blob {sha256} was damaged on disk and has been removed")
        return data

    def has(self, sha256: str) -> bool:
        return self.path(sha256).exists()
