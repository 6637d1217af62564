"""What only the embedded store does: its memory budget and eviction, its file on disk (refused when damaged, locked
to one process, fsynced in groups), and its online compaction."""

from __future__ import annotations

import asyncio
import logging
import os
import time

import pytest

from edge_node.profiles import EmbeddedProfileStore, Profile, ProfileCodec, ProfileEvent, StoreLocked
from tests.edge_node.profiles.profile_backends import Backend, shopper

NOW = time.time()


def purchase(*items: str) -> ProfileEvent:
    return ProfileEvent("purchase", items, NOW)


def test_past_the_memory_budget_the_least_recently_used_leave_memory_and_come_back_from_disk(embedded: Backend) -> None:
    shoppers = [shopper() for _ in range(10)]
    one = len(ProfileCodec().encode(ProfileCodec().apply(Profile(), purchase("item-0", "item-1")))) + 32

    async def scenario() -> None:
        store = embedded.open(budget_bytes=3 * one)
        for i, someone in enumerate(shoppers):
            await store.apply_event(someone, purchase(f"item-{i % 2}", f"item-{1 - i % 2}"))
            held, held_bytes = store.held()
            assert held_bytes <= store.budget_bytes and held <= 3
        assert store.held() == (3, 3 * one)
        assert store.stats.evictions == 7 and store.stored() == 10
        await store.get(shoppers[7])  # used last: the oldest of the three in memory is now 8
        first = await store.get(shoppers[0])  # evicted long ago: read from disk, kept in memory again
        assert first is not None and first.recent_items() == ["item-0", "item-1"]
        assert store.stats.evictions == 8 and store.stats.misses == 0
        # Held now: 9, 7 and 0 (8 left to make room); a miss is only for a profile that is nowhere.
        assert await store.get(shopper()) is None and store.stats.misses == 1
        await store.close()

    asyncio.run(scenario())


def test_a_profile_held_in_memory_costs_about_its_encoded_bytes_not_its_decoded_objects(embedded: Backend) -> None:
    # The memory tier holds each record's msgpack form and decodes it on a read: decoded, a profile of 24 events of
    # 20 items takes about 10x its encoded bytes as Python objects, which 100,000 shoppers at one edge cannot afford.
    import gc
    import tracemalloc

    shoppers = [shopper() for _ in range(300)]
    items = [f"2{n:04d}" for n in range(20)]

    async def scenario() -> None:
        store = embedded.open()
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        for someone in shoppers:
            for n in range(24):
                await store.apply_event(someone, ProfileEvent("purchase", (items[n % 20],), NOW - 86400 * (24 - n)))
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
        held, accounted = store.held()
        assert held == len(shoppers)
        assert grown < 2.5 * accounted, (grown / held, accounted / held)
        record = await store.get(shoppers[0])  # and a read still gives the decoded profile
        assert record is not None and len(record.recent) == 24 and set(record.items) == set(items)
        await store.close()

    asyncio.run(scenario())


def test_a_damaged_store_file_is_moved_aside_and_the_store_starts_empty(
    embedded: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    someone = shopper()

    async def write() -> None:
        store = embedded.open()
        await store.apply_event(someone, purchase("A"))
        await store.close()

    async def reopen() -> tuple[Profile | None, int, Profile | None]:
        store = embedded.open()
        lost = await store.get(someone)
        await store.apply_event(someone, purchase("B"))
        record = await store.get(someone)
        await store.close()
        return lost, store.stats.corrupt_files, record

    asyncio.run(write())
    path = embedded.directory / "profiles.sqlite3"
    path.write_bytes(os.urandom(path.stat().st_size))
    with caplog.at_level(logging.ERROR, logger="edgerec.profiles"):
        lost, corrupt_files, record = asyncio.run(reopen())
    assert lost is None and corrupt_files == 1
    assert record is not None and record.recent_items() == ["B"]
    moved = [p.name for p in embedded.directory.iterdir() if ".corrupt-" in p.name]
    assert len(moved) == 1
    message = next(r.getMessage() for r in caplog.records if "refused" in r.getMessage())
    assert "not a readable SQLite database" in message and moved[0] in message and "starting empty" in message


def test_a_store_written_under_another_key_is_refused_at_open(
    embedded: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    async def write() -> None:
        store = embedded.open()
        await store.apply_event(shopper(), purchase("A"))
        await store.close()

    async def reopen() -> tuple[int, int]:
        store = embedded.open()
        counts = store.stats.corrupt_files, store.stored()
        await store.close()
        return counts

    asyncio.run(write())
    embedded.secret = "another-deployment-secret"
    with caplog.at_level(logging.ERROR, logger="edgerec.profiles"):
        assert asyncio.run(reopen()) == (1, 0)
    assert any("another key" in r.getMessage() for r in caplog.records)


def test_compaction_deletes_the_moved_aside_files_which_may_hold_erased_shoppers(embedded: Backend) -> None:
    async def scenario() -> list[str]:
        embedded.directory.mkdir(parents=True)
        (embedded.directory / "profiles.sqlite3").write_bytes(b"not a database at all" * 100)
        store = embedded.open()
        await store.compact()
        await store.close()
        return [p.name for p in embedded.directory.iterdir() if ".corrupt-" in p.name]

    assert asyncio.run(scenario()) == []


def test_a_second_store_on_the_same_directory_is_refused(embedded: Backend) -> None:
    async def scenario() -> None:
        store = embedded.open()
        with pytest.raises(StoreLocked, match="another process holds the profile store"):
            embedded.open()
        await store.close()
        again = embedded.open()  # released by close
        await again.close()

    asyncio.run(scenario())


def test_writes_during_a_compaction_are_carried_into_the_compacted_file(embedded: Backend) -> None:
    kept, erased_meanwhile, added_meanwhile = shopper(), shopper(), shopper()

    async def scenario() -> tuple[Profile | None, Profile | None, Profile | None]:
        store = embedded.open()
        await store.apply_event(kept, purchase("A"))
        await store.apply_event(erased_meanwhile, purchase("B"))
        compaction = asyncio.create_task(store.compact())
        await asyncio.sleep(0)  # the copy is being built in the worker thread from a snapshot taken now
        await store.apply_event(kept, purchase("C"))
        await store.erase(erased_meanwhile)
        await store.apply_event(added_meanwhile, purchase("D"))
        await compaction
        await store.close()
        reopened = embedded.open()
        records = (await reopened.get(kept), await reopened.get(erased_meanwhile), await reopened.get(added_meanwhile))
        await reopened.close()
        return records

    kept_record, erased_record, added_record = asyncio.run(scenario())
    assert kept_record is not None and kept_record.recent_items() == ["A", "C"]
    assert erased_record is None and embedded.traces(erased_meanwhile) == []
    assert added_record is not None and added_record.recent_items() == ["D"]


def test_many_erasures_leave_no_trace_in_any_file_after_compaction(embedded: Backend) -> None:
    shoppers = [shopper() for _ in range(2000)]  # enough rows for interior pages in the table and its index
    erased = shoppers[::3]

    async def scenario() -> None:
        store = embedded.open()
        for someone in shoppers:
            await store.apply_event(someone, purchase("A"))
        for someone in erased:
            await store.erase(someone)
        await store.compact()
        await store.close()

    asyncio.run(scenario())
    data = b"".join(p.read_bytes() for p in embedded.directory.iterdir() if p.is_file())
    assert [p for p in erased if p.encode() in data or bytes.fromhex(p) in data] == []
    assert all(p.encode() in data for p in shoppers[1::3])  # the check would see one that is there


def test_the_group_fsync_checkpoints_writes_into_the_database_file(embedded: Backend) -> None:
    someone = shopper()

    async def scenario() -> bool:
        store = embedded.open(fsync_interval_s=0.05)
        store.start()
        await store.apply_event(someone, purchase("A"))
        in_file_at_once = someone.encode() in (embedded.directory / "profiles.sqlite3").read_bytes()
        deadline = time.monotonic() + 10
        while someone.encode() not in (embedded.directory / "profiles.sqlite3").read_bytes():
            assert time.monotonic() < deadline, "no checkpoint within 10 s"
            await asyncio.sleep(0.02)
        await store.close()
        return in_file_at_once

    # At first the write is in the WAL only (written, not yet synced); the checkpoint syncs and copies it.
    assert asyncio.run(scenario()) is False


def test_a_profile_larger_than_the_whole_budget_is_served_from_disk(tmp_path: os.PathLike[str]) -> None:
    async def scenario() -> tuple[Profile | None, tuple[int, int]]:
        store = EmbeddedProfileStore(tmp_path, "a-secret-of-the-deployment", ProfileCodec(), budget_bytes=10)
        someone = shopper()
        await store.apply_event(someone, purchase("A"))
        record = await store.get(someone)
        held = store.held()
        await store.close()
        return record, held

    record, held = asyncio.run(scenario())
    assert record is not None and held == (0, 0)


def test_a_compaction_copy_left_by_a_crash_is_removed_at_open(embedded: Backend) -> None:
    someone = shopper()

    async def scenario() -> list[str]:
        store = embedded.open()
        await store.apply_event(someone, purchase("A"))
        await store.close()
        # What a crash in the middle of a compaction leaves: a copy holding the shopper, erased since.
        stray = embedded.directory / "profiles.sqlite3.compact"
        stray.write_bytes((embedded.directory / "profiles.sqlite3").read_bytes())
        reopened = embedded.open()
        await reopened.erase(someone)
        await reopened.close()
        return [p.name for p in embedded.directory.iterdir() if ".compact" in p.name]

    assert asyncio.run(scenario()) == []
    assert embedded.traces(someone) == []
