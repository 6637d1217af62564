"""The in-memory tier of the embedded store: records (each profile's encoded form) in least-recently-used order
under a byte budget, accounted as the encoded size of each record plus its key."""

from __future__ import annotations

import struct
from collections import OrderedDict
from typing import NamedTuple

_UPDATED = struct.Struct("<d")  # the time of the last write, in front of the record in one bytes object
_HEX = frozenset("0123456789abcdef")


class Held(NamedTuple):
    record: bytes
    size: int  # accounted bytes: encoded record + pseudonym
    updated: float  # when the store last wrote it (retention counts from here)


def _key(pseudonym: str) -> bytes | str:
    """A pseudonym of hex digits as its raw bytes (16 for the edge's 32 characters: 49 bytes of Python object
    instead of 81); any other key as it is."""
    if len(pseudonym) % 2 == 0 and _HEX.issuperset(pseudonym):
        return bytes.fromhex(pseudonym)
    return pseudonym


def _chars(key: bytes | str) -> int:
    return 2 * len(key) if isinstance(key, bytes) else len(key)


class MemoryTier:
    """An LRU under `budget_bytes`. A `get` moves the record to the young end; a `put` past the budget drops
    the oldest records (they stay on disk) and returns how many it dropped.

    One entry is a key and one bytes object (the write time, then the record), about 150 bytes of Python memory
    besides the record itself; the accounted size is derived from them, not stored."""

    __slots__ = ("budget_bytes", "bytes_held", "_entries")

    def __init__(self, budget_bytes: int) -> None:
        if budget_bytes < 0:
            raise ValueError("the memory budget is a number of bytes, 0 or more")
        self.budget_bytes = budget_bytes
        self.bytes_held = 0
        self._entries: OrderedDict[bytes | str, bytes] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, pseudonym: str) -> Held | None:
        key = _key(pseudonym)
        value = self._entries.get(key)
        if value is None:
            return None
        self._entries.move_to_end(key)
        return Held(value[_UPDATED.size :], len(value) - _UPDATED.size + len(pseudonym), _UPDATED.unpack_from(value)[0])

    def put(self, pseudonym: str, record: bytes, encoded_bytes: int, updated: float) -> int:
        """`encoded_bytes` is `len(record)` (kept in the signature the store calls)."""
        self.pop(pseudonym)
        size = encoded_bytes + len(pseudonym)
        if size > self.budget_bytes:
            return 0  # larger than the whole budget: served from disk only
        self._entries[_key(pseudonym)] = _UPDATED.pack(updated) + record
        self.bytes_held += size
        evicted = 0
        while self.bytes_held > self.budget_bytes:
            key, oldest = self._entries.popitem(last=False)
            self.bytes_held -= len(oldest) - _UPDATED.size + _chars(key)
            evicted += 1
        return evicted

    def pop(self, pseudonym: str) -> Held | None:
        value = self._entries.pop(_key(pseudonym), None)
        if value is None:
            return None
        size = len(value) - _UPDATED.size + len(pseudonym)
        self.bytes_held -= size
        return Held(value[_UPDATED.size :], size, _UPDATED.unpack_from(value)[0])

    def drop_older_than(self, cutoff: float) -> int:
        stale = [key for key, value in self._entries.items() if _UPDATED.unpack_from(value)[0] < cutoff]
        for key in stale:
            self.bytes_held -= len(self._entries.pop(key)) - _UPDATED.size + _chars(key)
        return len(stale)

    def clear(self) -> None:
        self._entries.clear()
        self.bytes_held = 0
