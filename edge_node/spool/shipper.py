"""The spool's shipper: closed segments sent to the origin in order, one idempotent batch each (the frames as
written: it checks their checksums and decodes nothing), deleted only once the origin acknowledged them."""

from __future__ import annotations

import asyncio
import collections
import logging
import random
import ssl
from pathlib import Path
from typing import Callable, Protocol

import aiohttp
import orjson

from edgerec.core.tracing import DISABLED, Tracing
from origin_sync.wire.events import complete_frames, encode_frames_batch

from .health import HealthCounters
from .segments import read_segment

log = logging.getLogger("edgerec.events")


class ShippedSpool(Protocol):
    """What the shipper needs of a spool: its closed segments, a way to let go of one, and its counters."""

    dropped: collections.Counter[str]
    health: HealthCounters
    shipped: int
    ship_failures: int

    def closed_segments(self) -> list[Path]: ...

    def release(self, path: Path, suffix: str | None = None) -> None: ...


async def run_shipper(
    spool: ShippedSpool,
    origin_url: str | Callable[[], str],
    token: str,
    regions: tuple[str, ...],
    backoff_base_s: float = 0.2,
    backoff_max_s: float = 30.0,
    idle_s: float = 0.2,
    ssl_context: ssl.SSLContext | None = None,
    tracing: Tracing = DISABLED,
) -> None:
    """Ship closed segments in order, one batch each (its id is the segment's name, so a retry after a lost
    acknowledgement is recognised by the origin); delete a segment only after the origin acknowledged it.
    `ssl_context` is the syncer's: the same CA bundle and client certificate. `origin_url` may be a callable giving
    the origin to ship to now: the syncer's current one, so events follow it when it fails over. With tracing on,
    each batch sent is a span whose traceparent goes with it (the origin's span of it is its child)."""
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/x-msgpack"}
    failures = 0
    # The health counters ride on one segment's batch until the origin acknowledged it: a retry carries the same
    # counts under the same batch id, which the origin stores once.
    pending: tuple[str, list] | None = None
    connector = aiohttp.TCPConnector(ssl=ssl_context if ssl_context is not None else True)
    async with aiohttp.ClientSession(connector=connector) as session:
        while True:
            segments = spool.closed_segments()
            if not segments:
                await asyncio.sleep(idle_s)
                continue
            base = origin_url() if callable(origin_url) else origin_url
            url = f"{base.rstrip('/')}/v1/sync/events"
            try:
                for path in segments:
                    if pending is None or pending[0] != path.stem:  # moved to this segment if its own was set aside
                        pending = (path.stem, (pending[1] if pending else []) + spool.health.take())
                    with tracing.span("events ship", attributes={"edgerec.batch": path.stem}, client=True):
                        shipped = await _ship(
                            spool, session, url, tracing.inject(dict(headers)), regions, path, pending[1]
                        )
                    if shipped:
                        pending = None
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - keep the segment, retry with backoff and full jitter
                failures += 1
                spool.ship_failures += 1
                delay = random.uniform(0, min(backoff_max_s, backoff_base_s * 2 ** min(failures, 12)))
                log.warning(
                    "shipping events failed (%s: %s); %d segment(s) kept, retry in %.1fs",
                    type(exc).__name__,
                    str(exc)[:200],
                    len(segments),
                    delay,
                )
                await asyncio.sleep(delay)


async def ship_remaining(
    spool: ShippedSpool,
    origin_url: str,
    token: str,
    regions: tuple[str, ...],
    timeout_s: float,
    ssl_context: ssl.SSLContext | None = None,
    attempts: int = 3,
) -> int:
    """At a stop, once the writer has closed its last segment: ship the closed segments left, in order, until none
    is left, `timeout_s` has passed, or `attempts` tries in a row failed (the origin is down: what is left stays on
    disk and is shipped at the next start). Returns how many segments are left. A batch the shipper had sent but
    not seen acknowledged goes again under the same id, and the origin keeps it once."""
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/x-msgpack"}
    url = f"{origin_url.rstrip('/')}/v1/sync/events"
    if not spool.closed_segments():
        return 0
    health = spool.health.take()  # rides on the first batch the origin acknowledges
    failures = 0
    connector = aiohttp.TCPConnector(ssl=ssl_context if ssl_context is not None else True)
    try:
        async with asyncio.timeout(timeout_s), aiohttp.ClientSession(connector=connector) as session:
            while (segments := spool.closed_segments()) and failures < attempts:
                try:
                    for path in segments:
                        if await _ship(spool, session, url, headers, regions, path, health):
                            health = []
                    failures = 0
                except Exception as exc:  # noqa: BLE001 - keep the segment; a few quick retries, then leave it
                    failures += 1
                    spool.ship_failures += 1
                    log.warning("shipping events at the stop failed (%s: %s)", type(exc).__name__, str(exc)[:200])
                    if failures < attempts:
                        await asyncio.sleep(0.2 * 2**failures)
    except TimeoutError:
        log.warning("the stop's time for shipping events ran out")
    left = len(spool.closed_segments())
    if left:
        log.warning("%d event segment(s) left on disk unshipped; they are shipped at the next start", left)
    return left


async def _ship(
    spool: ShippedSpool,
    session: aiohttp.ClientSession,
    url: str,
    headers: dict[str, str],
    regions: tuple[str, ...],
    path: Path,
    health: list,
) -> bool:
    """Ship one segment; True when the origin acknowledged it (with its health rows)."""
    data = await asyncio.to_thread(path.read_bytes)
    whole, frames, torn = complete_frames(data)
    if torn:
        # Only the last batch written before a crash can be torn: it was never fsynced, never acknowledged.
        spool.dropped["torn_write"] += 1
        log.warning("segment %s ends in a torn write (crash before fsync); its complete batches are shipped", path.name)
    if frames:
        body = encode_frames_batch(path.stem, list(regions), data[:whole], health)
        async with session.post(url, data=body, headers=headers, timeout=aiohttp.ClientTimeout(total=60)) as resp:
            raw = await resp.read()
            if resp.status == 422:
                # The origin will never take this batch: set it aside rather than block the ones after it.
                events, _ = await asyncio.to_thread(read_segment, path)
                spool.dropped["rejected"] += len(events)
                log.error(
                    "origin refused event batch %s: %s; moved aside", path.stem, raw[:300].decode(errors="replace")
                )
                spool.release(path, ".rejected")
                return False
            if resp.status != 200:
                raise RuntimeError(f"HTTP {resp.status}: {raw[:300].decode(errors='replace')}")
            try:
                spool.shipped += int(orjson.loads(raw)["events"])
            except (ValueError, KeyError, TypeError):
                raise RuntimeError(f"unexpected acknowledgement: {raw[:300]!r}") from None
    spool.release(path)
    return bool(frames)
