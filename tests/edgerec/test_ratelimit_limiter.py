"""The token bucket itself: burst, refill, Retry-After, per-key independence and bounded memory."""

from __future__ import annotations

import pytest

from edgerec.core.ratelimit import RateLimiter, make_limiter, retry_after


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def limiter(rate: float, burst: int, max_keys: int = 1000) -> tuple[RateLimiter, FakeClock]:
    lim, clock = RateLimiter(rate, burst, max_keys), FakeClock()
    lim._clock = clock
    return lim, clock


def test_a_client_gets_its_burst_then_waits_for_the_refill_while_another_is_served():
    lim, clock = limiter(rate=2, burst=3)
    assert [lim.check("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = lim.check("a")
    assert wait == pytest.approx(0.5)
    assert retry_after(wait) == 1
    assert lim.check("b") == 0.0  # another client has its own bucket
    clock.now += 0.5
    assert lim.check("a") == 0.0  # one token back after 1/rate s
    assert lim.check("a") > 0
    clock.now += 100
    assert [lim.check("a") for _ in range(3)] == [0.0, 0.0, 0.0]  # refilled to the burst, never beyond
    assert lim.check("a") > 0


def test_retry_after_is_a_whole_number_of_seconds_at_least_one():
    assert retry_after(0.01) == 1 and retry_after(1.0) == 1 and retry_after(1.2) == 2
    lim, _ = limiter(rate=0.1, burst=1)
    lim.check("a")
    assert retry_after(lim.check("a")) == 10


def test_memory_is_bounded_and_idle_buckets_go_first():
    lim, clock = limiter(rate=10, burst=10, max_keys=100)
    for i in range(100):
        lim.check(f"old{i}")
    clock.now += 5  # every old bucket is full again: forgetting them changes nothing
    lim.check("busy")
    assert len(lim) == 1
    for i in range(10_000):  # a flood of new clients: the bound holds
        lim.check(i)
        assert len(lim) <= 100


def test_zero_rate_means_no_limiter():
    assert make_limiter(0, 100) is None
    with pytest.raises(ValueError):
        RateLimiter(1, 0)
