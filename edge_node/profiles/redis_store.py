"""The shared profile store: the region's Redis (redis-py's asyncio client), one encrypted value per pseudonym with
the retention as its TTL, so every replica of the region reads a write at once.

A read waits at most `read_timeout_s` (5 ms by default); past it, or with Redis down, it is a miss (counted) and
the request is answered anonymously; nothing raises to the caller. After a failure the store does not try Redis
again for `retry_after_s`, so a dead Redis costs requests nothing but a clock read. A write (an event, a summary)
is a WATCH/MULTI read-modify-write bounded by `write_timeout_s`; one that fails is counted and logged, and the
event still reaches the origin through the spool and comes back with its sync.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Generic, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError, WatchError

from .crypto import RecordCipher, derive_profile_key
from .interface import CorruptRecord, ProfileCodec, ProfileEvent, StoreStats, worth_logging

R = TypeVar("R")
log = logging.getLogger("edgerec.profiles")

DEFAULT_PREFIX = "edgerec:profile:"
DEFAULT_READ_TIMEOUT_S = 0.005
DEFAULT_WRITE_TIMEOUT_S = 0.05
DEFAULT_RETRY_AFTER_S = 1.0
_WATCH_ATTEMPTS = 5  # concurrent writers of one shopper (two replicas) retry the read-modify-write


class RedisProfileStore(Generic[R]):
    """Profiles in Redis under `prefix` + pseudonym. Redis itself bounds the memory (`maxmemory`, with
    `volatile-lru` or `allkeys-lru` evicting); every key carries the retention as its TTL."""

    def __init__(
        self,
        url: str,
        secret: str,
        codec: ProfileCodec[R],
        *,
        prefix: str = DEFAULT_PREFIX,
        retention_s: float,
        read_timeout_s: float = DEFAULT_READ_TIMEOUT_S,
        write_timeout_s: float = DEFAULT_WRITE_TIMEOUT_S,
        retry_after_s: float = DEFAULT_RETRY_AFTER_S,
        client: aioredis.Redis | None = None,
    ) -> None:
        if retention_s < 1:
            raise ValueError("profile retention is at least one second (a Redis TTL)")
        self.codec = codec
        self.prefix = prefix
        self.retention_s = retention_s
        self.read_timeout_s = read_timeout_s
        self.write_timeout_s = write_timeout_s
        self.retry_after_s = retry_after_s
        self.stats = StoreStats()
        self._cipher = RecordCipher(derive_profile_key(secret))
        self._down_until = 0.0
        # No retries inside the client: the bounded wait is ours, and a retry would run past it.
        self._redis = client or aioredis.Redis.from_url(
            url,
            socket_timeout=max(read_timeout_s, write_timeout_s),
            socket_connect_timeout=write_timeout_s,
            retry=Retry(NoBackoff(), 0),
            health_check_interval=0,
        )

    def held(self) -> None:
        return None  # Redis's INFO memory and DBSIZE tell; this process holds nothing

    def key(self, pseudonym: str) -> str:
        return self.prefix + pseudonym

    async def get(self, pseudonym: str) -> R | None:
        if time.monotonic() < self._down_until:
            self.stats.redis_errors += 1
            self.stats.misses += 1
            return None
        try:
            async with asyncio.timeout(self.read_timeout_s):
                sealed = await self._redis.get(self.key(pseudonym))
        except TimeoutError:
            self.stats.redis_timeouts += 1
            self.stats.misses += 1
            return None
        except (RedisError, OSError) as exc:
            self._failed("read", exc)
            self.stats.redis_errors += 1
            self.stats.misses += 1
            return None
        return self.stats.looked_up(self._open(pseudonym, sealed))

    async def apply_event(self, pseudonym: str, event: ProfileEvent) -> R:
        return await self._update(
            pseudonym, lambda current: self.codec.apply(self.codec.empty() if current is None else current, event)
        )

    async def put_summary(self, pseudonym: str, summary: R, summary_ts: float) -> R:
        return await self._update(pseudonym, lambda current: self.codec.merge(current, summary, summary_ts))

    async def erase(self, pseudonym: str) -> None:
        """Raises when Redis cannot be reached: an erasure must not be reported done when it is not."""
        await self._redis.delete(self.key(pseudonym))
        self.stats.erased += 1

    async def compact(self) -> int:
        return 0  # Redis expires keys by their TTL and frees erased ones at once

    async def close(self) -> None:
        await self._redis.aclose()

    async def _update(self, pseudonym: str, change: Any) -> R:
        if time.monotonic() >= self._down_until:
            try:
                async with asyncio.timeout(self.write_timeout_s):
                    return await self._read_modify_write(pseudonym, self.key(pseudonym), change)
            except TimeoutError:
                log.warning("profile store: a Redis write ran past %.0f ms; not stored", self.write_timeout_s * 1e3)
            except (RedisError, OSError) as exc:
                self._failed("write", exc)
        self.stats.write_failures += 1
        fallback: R = change(None)  # what the request path may still use for this answer
        return fallback

    async def _read_modify_write(self, pseudonym: str, key: str, change: Any) -> R:
        async with self._redis.pipeline(transaction=True) as pipe:
            for _ in range(_WATCH_ATTEMPTS):
                try:
                    await pipe.watch(key)
                    record: R = change(self._open(pseudonym, await pipe.get(key)))
                    pipe.multi()  # type: ignore[no-untyped-call]
                    pipe.set(
                        key, self._cipher.seal(pseudonym, self.codec.encode(record)), ex=max(1, int(self.retention_s))
                    )
                    await pipe.execute()
                    return record
                except WatchError:
                    continue
        raise RedisError(f"the profile changed under {_WATCH_ATTEMPTS} attempts in a row")

    def _open(self, pseudonym: str, sealed: bytes | str | None) -> R | None:
        if sealed is None:
            return None
        try:
            if not isinstance(sealed, bytes):
                raise CorruptRecord("not a sealed profile record")  # the client is bytes-only: never happens
            return self.codec.decode(self._cipher.open(pseudonym, sealed))
        except CorruptRecord as exc:
            self.stats.corrupt_records += 1
            if worth_logging(self.stats.corrupt_records):
                log.error(
                    "profile record in Redis refused (%s); answered as a miss and replaced at the next "
                    "write [%d corrupt records so far]",
                    exc,
                    self.stats.corrupt_records,
                )
            return None

    def _failed(self, what: str, exc: BaseException) -> None:
        """An error (not a timeout: one slow answer does not stop the next reads) stops Redis calls a while."""
        if time.monotonic() >= self._down_until:
            log.warning(
                "profile store: Redis %s failed (%s); profiles are misses for the next %.1fs",
                what,
                exc,
                self.retry_after_s,
            )
        self._down_until = time.monotonic() + self.retry_after_s
