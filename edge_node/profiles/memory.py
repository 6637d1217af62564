"""The in-memory tier of the embedded store: records (the store holds each profile's encoded form) in
least-recently-used order under a byte budget, accounted as the encoded size of each record plus its key."""

from __future__ import annotations

from collections import OrderedDict
from typing import Generic, NamedTuple, TypeVar

R = TypeVar("R")


class Held(NamedTuple, Generic[R]):
    record: R
    size: int  # accounted bytes: encoded record + pseudonym
    updated: float  # when the store last wrote it (retention counts from here)


class MemoryTier(Generic[R]):
    """An LRU under `budget_bytes`. A `get` moves the record to the young end; a `put` past the budget drops
    the oldest records (they stay on disk) and returns how many it dropped."""

    __slots__ = ("budget_bytes", "bytes_held", "_entries")

    def __init__(self, budget_bytes: int) -> None:
        if budget_bytes < 0:
            raise ValueError("the memory budget is a number of bytes, 0 or more")
        self.budget_bytes = budget_bytes
        self.bytes_held = 0
        self._entries: OrderedDict[str, Held[R]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, pseudonym: str) -> Held[R] | None:
        held = self._entries.get(pseudonym)
        if held is not None:
            self._entries.move_to_end(pseudonym)
        return held

    def put(self, pseudonym: str, record: R, encoded_bytes: int, updated: float) -> int:
        self.pop(pseudonym)
        size = encoded_bytes + len(pseudonym)
        if size > self.budget_bytes:
            return 0  # larger than the whole budget: served from disk only
        self._entries[pseudonym] = Held(record, size, updated)
        self.bytes_held += size
        evicted = 0
        while self.bytes_held > self.budget_bytes:
            _, oldest = self._entries.popitem(last=False)
            self.bytes_held -= oldest.size
            evicted += 1
        return evicted

    def pop(self, pseudonym: str) -> Held[R] | None:
        held = self._entries.pop(pseudonym, None)
        if held is not None:
            self.bytes_held -= held.size
        return held

    def drop_older_than(self, cutoff: float) -> int:
        stale = [pseudonym for pseudonym, held in self._entries.items() if held.updated < cutoff]
        for pseudonym in stale:
            self.pop(pseudonym)
        return len(stale)

    def clear(self) -> None:
        self._entries.clear()
        self.bytes_held = 0
