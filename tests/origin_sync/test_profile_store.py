"""Shopper profiles in the origin's store, on SQLite and PostgreSQL: events folded once, one change per changed
summary tagged with the shopper's regions, erasure that redacts the log, export."""

from __future__ import annotations

import asyncio
import time

import pytest

from origin_sync.origin.store import ChangeLogStore
from origin_sync.wire.events import pseudonym_key, pseudonymize
from origin_sync.wire.profiles import decode_summary
from origin_sync.wire.protocol import ALL_REGIONS, OP_PROFILE_ERASE, OP_PROFILE_UPSERT, unpack
from tests.conftest import make_offer
from tests.store_support import BACKENDS, run_on_store

KEY = pseudonym_key("test-secret")
ANNA, BEN, NOBODY = (pseudonymize(KEY, s) for s in ("anna", "ben", "nobody"))


def _orders() -> list[tuple]:
    return [
        (ANNA, "order:1:10001", "purchase", "10001", 1_300_000_000, "GB"),
        (ANNA, "order:1:10002", "purchase", "10002", 1_300_000_000, "GB"),
        (ANNA, "order:2:10001", "purchase", "10001", 1_300_086_400, "GB"),
        (BEN, "order:3:20001", "purchase", "20001", 1_300_000_500, "DE"),
        (NOBODY, "order:4:30001", "purchase", "30001", 1_300_000_900, ""),
    ]


async def _bodies(store: ChangeLogStore, since: int, regions: tuple[str, ...]) -> list[dict]:
    return [unpack(c["body"]) for c in (await store.changes_since(since, regions)).changes]


@pytest.mark.parametrize("kind", BACKENDS)
def test_events_fold_once_into_region_scoped_summaries_and_a_rerun_changes_nothing(kind, tmp_path, request):
    async def scenario(store: ChangeLogStore) -> None:
        first = await store.record_profile_events(_orders())
        assert first == {"events_new": 5, "profiles_changed": 3, "data_version": 2}
        gb, de = await _bodies(store, 0, ("GB",)), await _bodies(store, 0, ("DE",))
        assert [(b["op"], b["pseudonym"], b["regions"]) for b in gb] == [(OP_PROFILE_UPSERT, ANNA, ["GB"])]
        assert [b["pseudonym"] for b in de] == [BEN]
        anna = decode_summary(gb[0]["summary"])
        assert anna.items["10001"].count == 2 and anna.items["10002"].count == 1
        assert gb[0]["summary_ts"] == 1_300_086_400
        # The shopper seen in no region is stored but in no change at all.
        assert not any(b["pseudonym"] == NOBODY for b in await _bodies(store, 0, ("GB", "DE", "FR")))
        # Re-importing the same events: nothing new, no change, same summaries.
        again = await store.record_profile_events(list(reversed(_orders())))
        assert again == {"events_new": 0, "profiles_changed": 0, "data_version": 2}
        assert (await store.export_profile(ANNA))["summary"]["items"]["10001"]["count"] == 2
        await store.verify_chain()

    run_on_store(kind, tmp_path, request, scenario)


@pytest.mark.parametrize("kind", BACKENDS)
def test_a_changed_profile_ships_alone_and_a_new_region_hears_of_it(kind, tmp_path, request):
    async def scenario(store: ChangeLogStore) -> None:
        await store.record_profile_events(_orders())
        head = await store.head_version()
        await store.record_profile_events([(ANNA, "order:9:10003", "purchase", "10003", 1_300_200_000, "DE")])
        page = await store.changes_since(head, ("GB", "DE"))
        assert len(page.changes) == 1
        change = unpack(page.changes[0]["body"])
        assert change["pseudonym"] == ANNA and change["regions"] == ["DE", "GB"]
        assert len(page.changes[0]["body"]) < 400  # one small profile, not the whole set
        assert [b["pseudonym"] for b in await _bodies(store, head, ("DE",))] == [ANNA]

    run_on_store(kind, tmp_path, request, scenario)


@pytest.mark.parametrize("kind", BACKENDS)
def test_ingested_feedback_folds_under_the_offer_sku(kind, tmp_path, request):
    async def scenario(store: ChangeLogStore) -> None:
        await store.upsert_offer(make_offer("gb-10001", "10001"))
        event = {
            "id": "e1",
            "kind": "add_to_cart",
            "ts": 1_300_000_000.5,
            "region": "GB",
            "shopper": ANNA,
            "offer_ids": ["gb-10001", "unknown-offer"],
        }
        impression = {**event, "id": "e2", "kind": "impression"}
        result = await store.record_feedback([event, impression, {**event, "shopper": None}])
        assert result["events_new"] == 2 and result["profiles_changed"] == 1
        assert (await store.record_feedback([event]))["events_new"] == 0  # a retried batch adds nothing
        items = (await store.export_profile(ANNA))["summary"]["items"]
        assert sorted(items) == ["10001", "unknown-offer"]

    run_on_store(kind, tmp_path, request, scenario)


@pytest.mark.parametrize("kind", BACKENDS)
def test_erasure_deletes_redacts_the_log_and_reaches_every_region(kind, tmp_path, request):
    async def scenario(store: ChangeLogStore) -> None:
        await store.record_profile_events(_orders())
        await store.record_profile_events([(ANNA, "order:9:10003", "purchase", "10003", 1_300_200_000, "GB")])
        result = await store.erase_profile(ANNA)
        assert result["profile_erased"] and result["profile_events_erased"] == 4 and result["changes_redacted"] == 2
        assert await store.export_profile(ANNA) is None
        for regions in (("GB",), ("FR",)):
            bodies = await _bodies(store, 0, regions)
            assert not any(b["op"] == OP_PROFILE_UPSERT and b["pseudonym"] == ANNA for b in bodies)
            assert [b["op"] for b in bodies if b.get("pseudonym") == ANNA] == [OP_PROFILE_ERASE]
        # No byte of the old summaries is left in the log, and the chain still verifies across the redactions.
        page = await store.changes_since(0, (ALL_REGIONS, "GB", "DE"))
        assert all(b"10002" not in c["body"] for c in page.changes)
        await store.verify_chain()
        assert (await store.export_profile(BEN))["regions"] == ["DE"]
        # Events from before the erasure (a batch shipped late, the file imported again) do not bring it back;
        # a later one starts a new profile.
        assert (await store.record_profile_events(_orders()))["events_new"] == 0
        assert await store.export_profile(ANNA) is None
        later = await store.record_profile_events([(ANNA, "new", "click", "10009", int(time.time()) + 5, "GB")])
        assert later["events_new"] == 1 and list((await store.export_profile(ANNA))["summary"]["items"]) == ["10009"]

    run_on_store(kind, tmp_path, request, scenario)


def test_erasure_leaves_no_summary_bytes_in_the_sqlite_file(tmp_path, request):
    async def scenario(store: ChangeLogStore) -> None:
        marker = "ZQXWV"  # an item id no other data holds
        await store.record_profile_events([(ANNA, "k", "purchase", marker, 1_300_000_000, "GB")])
        await store.erase_profile(ANNA)
        await store.engine.run(_checkpoint)
        data = b"".join(p.read_bytes() for p in tmp_path.glob("origin.db*"))
        assert marker.encode() not in data

    async def _checkpoint(conn) -> None:
        await conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        await conn.execute("VACUUM")

    run_on_store("sqlite", tmp_path, request, scenario)


def run(coro):
    return asyncio.run(coro)
