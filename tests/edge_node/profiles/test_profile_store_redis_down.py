"""The Redis store when Redis fails: a closed port (refused), and a server that accepts but never answers (hung).
A read is a miss within its bounded wait, counted, and nothing raises to the request path."""

from __future__ import annotations

import asyncio
import time

import pytest

from edge_node.profiles import ProfileCodec, ProfileEvent
from edge_node.profiles.redis_store import RedisProfileStore
from edgerec.cli.process import free_port
from tests.edge_node.profiles.profile_backends import shopper

SECRET = "a-secret-of-the-deployment"


def test_with_redis_down_a_read_is_a_counted_miss_and_a_write_does_not_raise() -> None:
    async def scenario() -> None:
        store = RedisProfileStore(
            f"redis://127.0.0.1:{free_port()}/0",
            SECRET,
            ProfileCodec(),
            retention_s=3600,
            read_timeout_s=0.005,
            retry_after_s=30,
        )
        someone = shopper()
        started = time.perf_counter()
        assert await store.get(someone) is None
        first_wait = time.perf_counter() - started
        record = await store.apply_event(someone, ProfileEvent("purchase", ("A",), time.time()))
        started = time.perf_counter()
        for _ in range(100):  # within retry_after_s: not even a connection attempt
            assert await store.get(someone) is None
        later_waits = (time.perf_counter() - started) / 100
        assert record.recent_items() == ["A"]  # what this answer may still use
        # The first read is refused, or (the first connection's set-up) runs past its 5 ms: a miss either way.
        assert store.stats.redis_errors + store.stats.redis_timeouts == 101 and store.stats.redis_errors >= 100
        assert store.stats.misses == 101 and store.stats.write_failures == 1
        assert first_wait < 0.25, f"a refused connection took {first_wait * 1e3:.1f} ms"
        assert later_waits < 0.001
        with pytest.raises(Exception):  # an erasure must not be reported done when it is not
            await store.erase(someone)
        await store.close()

    asyncio.run(scenario())


def test_a_hung_redis_costs_a_read_no_more_than_its_bounded_wait() -> None:
    async def scenario() -> None:
        accepted: list[asyncio.StreamWriter] = []

        async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            accepted.append(writer)  # reads nothing, answers nothing, keeps the connection open

        server = await asyncio.start_server(never_answer, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        store = RedisProfileStore(
            f"redis://127.0.0.1:{port}/0",
            SECRET,
            ProfileCodec(),
            retention_s=3600,
            read_timeout_s=0.005,
            write_timeout_s=0.02,
        )
        waits = []
        for _ in range(5):
            started = time.perf_counter()
            assert await store.get(shopper()) is None
            waits.append(time.perf_counter() - started)
        started = time.perf_counter()
        await store.apply_event(shopper(), ProfileEvent("click", ("A",), time.time()))
        write_wait = time.perf_counter() - started
        assert accepted, "the store did reach the hung server"
        assert store.stats.redis_timeouts == 5 and store.stats.misses == 5 and store.stats.write_failures == 1
        # 5 ms each, with slack for a loaded 2-core machine; a socket timeout of the client default would be 5 s.
        assert min(waits) >= 0.004 and max(waits) < 0.2, [f"{w * 1e3:.1f} ms" for w in waits]
        assert write_wait < 0.3
        await store.close()
        server.close()
        for writer in accepted:
            writer.close()

    asyncio.run(scenario())
