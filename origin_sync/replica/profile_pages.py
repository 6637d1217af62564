"""Loading the edge's profile store after a snapshot, which carries no profiles: the signed pages of
`/v1/sync/profiles`, each verified and handed to the syncer's `on_profiles`."""

from __future__ import annotations

import asyncio
from typing import Awaitable, Callable, Mapping

from origin_sync.wire.profiles import ProfileChange
from origin_sync.wire.protocol import KIND_PROFILES
from origin_sync.wire.signing import Verifier, open_envelope

from .state import profiles_from_page

Get = Callable[[str, dict[str, str], float], Awaitable[tuple[bytes, Mapping[str, str]]]]


class ProfileLoad:
    """Where loading stands: `after` is the pseudonym the next page starts after, None once every page is in."""

    def __init__(self) -> None:
        self.after: str | None = ""
        self.loaded = 0

    async def run(
        self,
        get: Get,
        verifier: Verifier,
        regions: tuple[str, ...],
        on_profiles: Callable[[tuple[ProfileChange, ...]], Awaitable[None]],
    ) -> int:
        """Every remaining page into `on_profiles`; the summaries handed over."""
        while self.after is not None:
            after = self.after
            body, _ = await get("/v1/sync/profiles", {"regions": ",".join(regions), "after": after}, 120.0)
            page = await asyncio.to_thread(open_envelope, body, KIND_PROFILES, verifier)
            changes, following = profiles_from_page(page, regions, after)
            if changes:
                await on_profiles(tuple(changes))
                self.loaded += len(changes)
            self.after = following or None
        return self.loaded
