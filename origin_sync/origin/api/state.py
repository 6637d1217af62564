"""What the handlers share, under typed application keys: the store, the sink, the keys, the credentials, the
limits, and the two small shared objects of the sync API (the change signal, the snapshot cache)."""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict

from aiohttp import web

from edgerec.core.ratelimit import RateLimiter
from edgerec.core.shutdown import Drain
from edgerec.core.tracing import Tracing
from origin_sync.origin.config import OriginConfig
from origin_sync.origin.keyring import KeyRing
from origin_sync.origin.sinks import EventSink
from origin_sync.origin.store import ChangeLogStore

from .metrics import OriginMetrics
from .reload import CredentialReloader


class ChangeSignal:
    """Wakes every waiting long-poll when a change is committed; spurious wake-ups are harmless."""

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self.closing = False

    def close(self) -> None:
        """At shutdown: answer every waiting long-poll now, so that edges move on instead of holding the exit."""
        self.closing = True
        self.notify()

    def notify(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    async def wait(self, timeout_s: float) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._event.wait(), timeout_s)


SnapshotKey = tuple[tuple[str, ...], int, str]  # (regions, version, signing key id)


class SnapshotCache:
    """Sealed snapshots by (regions, version, signing key id): immutable, so shared by every edge that asks for the
    same one."""

    def __init__(self, size: int = 16) -> None:
        self._items: OrderedDict[SnapshotKey, bytes] = OrderedDict()
        self._size = size

    def get(self, key: SnapshotKey) -> bytes | None:
        if key in self._items:
            self._items.move_to_end(key)
        return self._items.get(key)

    def put(self, key: SnapshotKey, body: bytes) -> None:
        self._items[key] = body
        while len(self._items) > self._size:
            self._items.popitem(last=False)


STORE = web.AppKey("store", ChangeLogStore)
CONFIG = web.AppKey("config", OriginConfig)
CHANGES = web.AppKey("changes", ChangeSignal)
SNAPSHOTS = web.AppKey("snapshots", SnapshotCache)
SINK = web.AppKey("sink", EventSink)
LIMITS = web.AppKey("limits", dict[str, RateLimiter | None])  # by endpoint group: "admin", "sync"
METRICS = web.AppKey("metrics", OriginMetrics)
KEYRING = web.AppKey("keyring", KeyRing)
CREDENTIALS = web.AppKey("credentials", CredentialReloader)
TRACING = web.AppKey("tracing", Tracing)
DRAIN = web.AppKey("drain", Drain)  # the graceful stop: /readyz answers 503 draining from SIGTERM on
READY_STATE = web.AppKey("ready_state", dict[str, str | None])  # {"reason": why /readyz last answered 503}
