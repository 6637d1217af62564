"""The origin's profile summaries and erasures, as the syncer verifies them, into the edge's profile store: the one
place the edge calls `put_summary` and `erase` for the origin (the syncer's `on_profiles`)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from edge_node.profiles.interface import CorruptRecord, ProfileCodec, ProfileStore
from origin_sync.wire.profiles import ProfileChange

log = logging.getLogger("edgerec.profiles")


class ProfileSync:
    """`Syncer(on_profiles=ProfileSync(store, codec))`. A summary is decoded by the store's codec (the wire form is
    the codec's record) and merged with the local events after its time; an erasure removes the profile, and a
    compaction then runs in the background, so that no file of the store keeps the erased bytes. A failing
    `erase` (Redis down) raises: the syncer keeps the batch and applies it again."""

    def __init__(self, store: ProfileStore[Any], codec: ProfileCodec[Any]) -> None:
        self.store, self.codec = store, codec
        self.summaries = self.erasures = self.refused = 0
        self._compaction: asyncio.Task[int] | None = None

    async def __call__(self, changes: tuple[ProfileChange, ...]) -> None:
        erased = False
        for change in changes:
            if change.summary is None:
                await self.store.erase(change.pseudonym)
                self.erasures += 1
                erased = True
                continue
            try:
                summary = self.codec.decode(change.summary)
            except CorruptRecord as exc:  # signed by the origin, so a codec of another version: not retried
                self.refused += 1
                log.error("a profile summary from the origin was refused by this edge's codec (%s)", exc)
                continue
            await self.store.put_summary(change.pseudonym, summary, change.summary_ts)
            self.summaries += 1
        if erased and (self._compaction is None or self._compaction.done()):
            self._compaction = asyncio.create_task(self.store.compact(), name="edgerec-profiles-compact")

    async def settled(self) -> None:
        """Wait for the compaction an erasure started (tests, shutdown)."""
        if self._compaction is not None:
            await self._compaction
