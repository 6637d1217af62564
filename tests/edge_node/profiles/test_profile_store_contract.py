"""The behaviour both profile stores promise, each test run against the embedded store (temporary directory) and
the Redis store (the real server on 127.0.0.1:6379)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from edge_node.profiles import Profile, ProfileEvent, register_profile_metrics
from edge_node.profiles.codec import MAX_ITEMS, MAX_RECENT
from tests.edge_node.profiles.profile_backends import Backend, shopper

REPO = Path(__file__).resolve().parents[3]
NOW = time.time()


def purchase(*items: str, ts: float = NOW) -> ProfileEvent:
    return ProfileEvent("purchase", items, ts)


def test_an_applied_event_is_read_back_at_once(backend: Backend) -> None:
    async def scenario() -> tuple[Profile | None, Profile | None, Profile | None]:
        store = backend.open()
        someone, nobody = shopper(), shopper()
        await store.apply_event(someone, purchase("A", "B"))
        await store.apply_event(someone, ProfileEvent("click", ("C",), NOW + 1))
        first = await store.get(someone)
        other = await store.get(nobody)
        shared = first
        if backend.kind == "redis":  # another replica of the region reads the same write at once
            second_replica = backend.open()
            shared = await second_replica.get(someone)
            await second_replica.close()
        await store.close()
        return first, other, shared

    first, other, shared = asyncio.run(scenario())
    assert first is not None and other is None
    assert first.recent_items("purchase") == ["A", "B"] and first.recent_items("click") == ["C"]
    assert first.items["A"].count == 1 and first.decayed_at("A", int(NOW)) == pytest.approx(1.0)
    assert shared == first


def test_a_profile_stays_within_its_bounds(backend: Backend) -> None:
    async def scenario() -> Profile | None:
        store = backend.open()
        someone = shopper()
        for _ in range(20):  # a favourite bought early and often
            await store.apply_event(someone, purchase("favourite", ts=NOW - 86400))
        for i in range(MAX_ITEMS + 100):
            await store.apply_event(someone, ProfileEvent("click", (f"glance-{i}",), NOW))
        record = await store.get(someone)
        await store.close()
        return record

    record = asyncio.run(scenario())
    assert record is not None
    assert len(record.recent) == MAX_RECENT and len(record.items) == MAX_ITEMS
    assert record.recent[-1].item == f"glance-{MAX_ITEMS + 99}"  # the newest events are the ones kept
    assert "favourite" in record.items and record.items["favourite"].count == 20
    assert "glance-0" not in record.items  # past the bound, the weakest item went


def test_profiles_survive_closing_and_reopening_the_store(backend: Backend) -> None:
    someone = shopper()

    async def write() -> None:
        store = backend.open()
        await store.apply_event(someone, purchase("A"))
        await store.apply_event(someone, purchase("B"))
        await store.close()

    async def read() -> Profile | None:
        store = backend.open()
        record = await store.get(someone)
        await store.close()
        return record

    asyncio.run(write())
    record = asyncio.run(read())
    assert record is not None and record.recent_items() == ["A", "B"]


CHILD = """
import asyncio, json, sys, time
from edge_node.profiles import EmbeddedProfileStore, ProfileCodec, ProfileEvent
args = json.loads(sys.argv[1])

async def main():
    if args["kind"] == "embedded":
        store = EmbeddedProfileStore(args["directory"], args["secret"], ProfileCodec(), fsync_interval_s=60)
    else:
        from edge_node.profiles.redis_store import RedisProfileStore
        store = RedisProfileStore(args["url"], args["secret"], ProfileCodec(), prefix=args["prefix"],
                                  retention_s=3600, read_timeout_s=1, write_timeout_s=1)
    for i in range(args["events"]):
        await store.apply_event(args["shopper"], ProfileEvent("purchase", (f"item-{i}",), time.time()))
    print("applied", flush=True)
    await asyncio.sleep(3600)  # killed here: no close, no checkpoint, no fsync

asyncio.run(main())
"""


def test_a_sigkilled_process_loses_no_applied_event(backend: Backend) -> None:
    someone = shopper()
    args = {**backend.child_args(), "shopper": someone, "events": 30}
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen([sys.executable, "-c", CHILD, json.dumps(args)], stdout=subprocess.PIPE, env=env)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == b"applied"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL

    async def read() -> Profile | None:
        store = backend.open()  # the killed process's lock went with it
        record = await store.get(someone)
        await store.close()
        return record

    record = asyncio.run(read())
    assert record is not None and record.recent_items()[-30:] == [f"item-{i}" for i in range(30)]


def test_a_damaged_record_is_refused_counted_and_answered_as_a_miss(
    backend: Backend, caplog: "logging.LogCaptureFixture"
) -> None:
    someone, other = shopper(), shopper()

    async def write() -> None:
        store = backend.open()
        await store.apply_event(someone, purchase("A"))
        await store.apply_event(other, purchase("B"))
        await store.close()

    async def read() -> tuple[Profile | None, Profile | None, int, Profile | None]:
        store = backend.open()
        damaged = await store.get(someone)
        intact = await store.get(other)
        corrupt = store.stats.corrupt_records
        await store.apply_event(someone, purchase("C"))  # a new event starts the profile afresh
        again = await store.get(someone)
        await store.close()
        return damaged, intact, corrupt, again

    asyncio.run(write())
    backend.damage_record(someone)
    with caplog.at_level(logging.ERROR, logger="edgerec.profiles"):
        damaged, intact, corrupt, again = asyncio.run(read())
    assert damaged is None and corrupt == 1
    assert intact is not None and intact.recent_items() == ["B"]
    assert again is not None and again.recent_items() == ["C"]
    assert any("profile record" in r.getMessage() and "does not decrypt" in r.getMessage() for r in caplog.records)
    assert not any(someone in r.getMessage() for r in caplog.records)  # the pseudonym is not logged


def test_an_erased_shopper_leaves_no_trace_after_compaction(backend: Backend) -> None:
    someone, other = shopper(), shopper()

    async def scenario() -> tuple[list[str], Profile | None, Profile | None, list[str], int]:
        store = backend.open()
        for item in ("A", "B", "C"):
            await store.apply_event(someone, purchase(item))
            await store.apply_event(other, purchase(item))
        before = backend.traces(someone)
        await store.erase(someone)
        erased = await store.get(someone)
        await store.compact()
        after = backend.traces(someone)
        kept = await store.get(other)
        await store.close()
        return before, erased, kept, after, store.stats.erased

    before, erased, kept, after, count = asyncio.run(scenario())
    assert before, "the check finds the pseudonym while the profile is stored"
    assert erased is None and count == 1
    assert after == [], f"the erased pseudonym is still in {after}"
    assert kept is not None and kept.recent_items() == ["A", "B", "C"]
    assert backend.traces(someone) == []  # nor after closing (the WAL checkpointed into the file)


def test_a_profile_not_updated_within_the_retention_is_gone(backend: Backend) -> None:
    stale, fresh = shopper(), shopper()

    async def scenario() -> tuple[Profile | None, Profile | None, Profile | None]:
        store = backend.open(retention_s=2)  # whole seconds (a Redis TTL); margins of 0.7 s for a loaded machine
        await store.apply_event(stale, purchase("A"))
        await asyncio.sleep(1.2)
        await store.apply_event(fresh, purchase("B"))
        before = await store.get(stale)
        await asyncio.sleep(1.5)  # stale: 2.7 s since its last update; fresh: 1.5 s
        await store.compact()
        after, kept = await store.get(stale), await store.get(fresh)
        await store.close()
        return before, after, kept

    before, after, kept = asyncio.run(scenario())
    assert before is not None
    assert after is None
    assert kept is not None and kept.recent_items() == ["B"]
    assert backend.traces(stale) == []


def test_the_store_reports_its_metrics(backend: Backend) -> None:
    async def scenario() -> str:
        store = backend.open()
        registry = CollectorRegistry()
        register_profile_metrics(registry, store)
        someone = shopper()
        await store.apply_event(someone, purchase("A"))
        await store.get(someone)
        await store.get(someone)
        await store.get(shopper())
        text = generate_latest(registry).decode()
        await store.close()
        return text

    text = asyncio.run(scenario())
    assert 'edgerec_profiles_lookups_total{result="hit"} 2.0' in text
    assert 'edgerec_profiles_lookups_total{result="miss"} 1.0' in text
    assert 'edgerec_profiles_corrupt_total{what="record"} 0.0' in text
    assert 'edgerec_profiles_redis_failures_total{reason="timeout"} 0.0' in text
    if backend.kind == "embedded":
        assert "edgerec_profiles_held 1.0" in text and "edgerec_profiles_budget_bytes" in text
    else:
        assert "edgerec_profiles_held" not in text  # Redis's own INFO tells, not this process
