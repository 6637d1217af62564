"""The edge's profile hook on a real embedded store: the origin's summaries merged, erasures applied, then the
store compacted so that no file keeps the erased shopper."""

from __future__ import annotations

import asyncio

from edge_node.profile_sync import ProfileSync
from edge_node.profiles.codec import ProfileCodec
from edge_node.profiles.embedded import EmbeddedProfileStore
from edge_node.profiles.interface import ProfileEvent as EdgeEvent
from origin_sync.wire.events import pseudonym_key, pseudonymize
from origin_sync.wire.profiles import ProfileChange, ProfileEvent, encode_summary, fold

SECRET = "fleet-secret"
ANNA = pseudonymize(pseudonym_key(SECRET), "anna")


def test_summaries_merge_into_the_store_and_an_erasure_leaves_no_byte_on_disk(tmp_path):
    async def main() -> None:
        codec = ProfileCodec()
        store = EmbeddedProfileStore(tmp_path / "profiles", SECRET, codec, fsync_interval_s=0)
        sync = ProfileSync(store, codec)
        try:
            await store.apply_event(ANNA, EdgeEvent("purchase", ("LOCAL1",), 1_400_000_000))
            summary, ts = fold([ProfileEvent("k", "purchase", "HIST1", 1_300_000_000)])
            await sync((ProfileChange(ANNA, encode_summary(summary), float(ts)),))
            held = await store.get(ANNA)
            assert held is not None and set(held.items) == {"HIST1", "LOCAL1"}  # the local event after summary_ts
            await sync((ProfileChange(ANNA, b"\xc1 not a summary", 1.0),))  # refused, not fatal
            assert sync.refused == 1
            await sync((ProfileChange(ANNA, None, 0.0),))
            await sync.settled()
            assert await store.get(ANNA) is None
        finally:
            await store.close()
        for path in (tmp_path / "profiles").rglob("*"):
            if path.is_file():
                data = path.read_bytes()
                assert ANNA.encode() not in data and bytes.fromhex(ANNA) not in data, path

    asyncio.run(main())
