"""Per-client token buckets, shared by the edge (keyed by client address) and the origin (keyed by credential).

A bucket holds up to `burst` tokens and refills at `rate` tokens a second; a request takes one token or is refused
with the seconds until the next one (the 429's Retry-After).

Memory is bounded: at most `max_keys` buckets are kept. When a new client would pass that bound, buckets idle
long enough to be full again are dropped (forgetting them changes nothing); if every bucket is still in use (a
flood from many addresses), the oldest half is dropped, and those clients start again with a full bucket. The
buckets are a plain dict rather than a cachetools TTLCache: a TTLCache look-up costs about 1.3 µs, this check
about 0.3 µs, and the request path runs it on every call.
"""

from __future__ import annotations

import itertools
import math
import time
from typing import Hashable

DEFAULT_MAX_KEYS = 65536


class RateLimiter:
    __slots__ = ("rate", "burst", "max_keys", "refill_s", "_buckets", "_clock")

    def __init__(self, rate: float, burst: int, max_keys: int = DEFAULT_MAX_KEYS) -> None:
        if rate <= 0 or burst < 1 or max_keys < 2:
            raise ValueError("rate must be > 0, burst >= 1, max_keys >= 2")
        self.rate = float(rate)
        self.burst = float(burst)
        self.max_keys = max_keys
        self.refill_s = self.burst / self.rate  # an idle bucket is full again after this long
        self._clock = time.monotonic
        self._buckets: dict[Hashable, list[float]] = {}

    def check(self, key: Hashable) -> float:
        """0.0 when the request may go ahead (a token is taken), else the seconds until a token is available."""
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.max_keys:
                self._shrink(now)
            self._buckets[key] = [self.burst - 1.0, now]
            return 0.0
        tokens = bucket[0] + (now - bucket[1]) * self.rate
        if tokens > self.burst:
            tokens = self.burst
        bucket[1] = now
        if tokens >= 1.0:
            bucket[0] = tokens - 1.0
            return 0.0
        bucket[0] = tokens
        return (1.0 - tokens) / self.rate

    def _shrink(self, now: float) -> None:
        idle_since = now - self.refill_s
        full = [k for k, b in self._buckets.items() if b[1] <= idle_since]
        for k in full:
            del self._buckets[k]
        if len(self._buckets) >= self.max_keys:  # all busy: drop the oldest half (dicts keep insertion order)
            for k in list(itertools.islice(self._buckets, len(self._buckets) // 2)):
                del self._buckets[k]

    def __len__(self) -> int:
        return len(self._buckets)


def retry_after(wait_s: float) -> int:
    """The Retry-After value of a refusal: whole seconds, at least 1."""
    return max(1, math.ceil(wait_s))


def make_limiter(rate: float, burst: int, max_keys: int = DEFAULT_MAX_KEYS) -> RateLimiter | None:
    """None (no limit) when the rate is 0."""
    return RateLimiter(rate, burst, max_keys) if rate > 0 else None
