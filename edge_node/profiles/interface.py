"""What every profile store shares: the event a profile learns from, the codec protocol that gives a profile its
content, the store protocol the request path calls, and the counters a store keeps for its metrics."""

from __future__ import annotations

import dataclasses
from typing import NamedTuple, Protocol, TypeVar

R = TypeVar("R")


class ProfileEvent(NamedTuple):
    """One feedback event as a profile sees it: its kind (purchase, add_to_cart, click), the items it names and
    its time (Unix seconds). No shopper id: the store is keyed by the pseudonym."""

    kind: str
    items: tuple[str, ...]
    ts: float


class CorruptRecord(ValueError):
    """A stored record that cannot be decrypted or decoded; the store counts it and answers a miss."""


class ProfileCodec(Protocol[R]):
    """The content of a profile. A record is immutable: `apply` and `merge` return a new one, so a request that
    holds a record while an event arrives keeps reading a consistent one."""

    @property
    def max_encoded_bytes(self) -> int:
        """The most bytes `encode` can return (the bound of one profile)."""
        ...

    def empty(self) -> R: ...

    def apply(self, record: R, event: ProfileEvent) -> R:
        """The record with one more event (raises ValueError for an event it cannot take)."""
        ...

    def merge(self, record: R | None, summary: R, summary_ts: float) -> R:
        """The origin's summary of the shopper's history up to `summary_ts`, with the local events after it."""
        ...

    def encode(self, record: R) -> bytes: ...

    def decode(self, data: bytes) -> R:
        """The record `encode` wrote; CorruptRecord for anything else."""
        ...


@dataclasses.dataclass
class StoreStats:
    """Counters since the store opened (the metrics read them at scrape time)."""

    hits: int = 0
    misses: int = 0
    evictions: int = 0  # records dropped from memory to stay within the budget (still on disk)
    expired: int = 0  # records dropped for retention
    erased: int = 0
    corrupt_records: int = 0  # undecryptable or undecodable records, answered as misses
    corrupt_files: int = 0  # whole store files refused at open, moved aside and rebuilt empty
    # The store opened with no file of its own (a new directory, or its file refused): the origin's summaries of the
    # edge's regions must be loaded again even when the edge's replica comes from its disk.
    started_empty: bool = False
    write_failures: int = 0  # events kept in memory but not stored (disk error, Redis down)
    redis_timeouts: int = 0  # reads past the bounded wait
    redis_errors: int = 0  # reads that failed (connection refused, reset, ...)
    compactions: int = 0

    def looked_up(self, record: R | None) -> R | None:
        """Count a read as a hit (a record) or a miss (None); the record, as it was."""
        if record is None:
            self.misses += 1
        else:
            self.hits += 1
        return record


def worth_logging(count: int) -> bool:
    """Whether the count-th occurrence of a recurring error is logged: the first ten, then one in a hundred, so a
    bad disk or a damaged Redis cannot flood the logs (the metrics count them all)."""
    return count <= 10 or count % 100 == 0


class ProfileStore(Protocol[R]):
    """The interface the request path calls; `EmbeddedProfileStore` and `RedisProfileStore` implement it.
    No method raises for a store that is down or a record that is broken: a read is then a miss."""

    stats: StoreStats

    async def get(self, pseudonym: str) -> R | None: ...

    async def apply_event(self, pseudonym: str, event: ProfileEvent) -> R:
        """Read-your-writes: the next `get` on this store sees the event once this returns."""
        ...

    async def put_summary(self, pseudonym: str, summary: R, summary_ts: float) -> R: ...

    async def erase(self, pseudonym: str) -> None: ...

    async def compact(self) -> int:
        """Drop expired records and the bytes of erased ones; returns the expired records dropped."""
        ...

    async def close(self) -> None: ...

    def held(self) -> tuple[int, int] | None:
        """(profiles, bytes) this process holds in memory, or None where the store does not know (Redis)."""
        ...
