"""The edge's syncer (aiohttp client): snapshot at start, then long-poll deltas, each applied to a new replica."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Mapping

import aiohttp

from .protocol import (
    OP_MODEL_ACTIVATE,
    OP_OFFER_DELETE,
    OP_OFFER_UPSERT,
    PROTOCOL_HEADER,
    PROTOCOL_VERSION,
    ProtocolError,
    check_envelope,
    offered_in,
    unpack,
)

log = logging.getLogger("edgerec.sync")


@dataclass(frozen=True)
class Replica:
    """The edge's copy of the origin's data at one version; replaced whole, never patched in place."""

    version: int
    regions: tuple[str, ...]
    offers: Mapping[str, dict[str, Any]]
    model: dict[str, Any] | None  # {"version", "sha256", "manifest"} of the active model


def apply_deltas(replica: Replica, batch: dict[str, Any]) -> Replica:
    """Return the replica that results from a delta batch; the given replica is left untouched."""
    check_envelope(batch, "deltas")
    if batch.get("from") != replica.version:
        raise ProtocolError(f"delta batch starts at {batch.get('from')}, replica is at {replica.version}")
    to = batch.get("to")
    if not isinstance(to, int) or to < replica.version:
        raise ProtocolError(f"delta batch ends at {to!r}, before the replica's version {replica.version}")
    offers = dict(replica.offers)
    model = replica.model
    last = replica.version
    for change in batch.get("changes", []):
        version = change.get("version")
        if not isinstance(version, int) or version <= last or version > to:
            raise ProtocolError(f"change version {version!r} out of order after {last} (batch to {to})")
        last = version
        op = change.get("op")
        if op == OP_OFFER_UPSERT:
            offer = change["offer"]
            if offered_in(offer, replica.regions):
                offers[offer["id"]] = offer
            else:
                offers.pop(offer["id"], None)
        elif op == OP_OFFER_DELETE:
            offers.pop(change["offer_id"], None)
        elif op == OP_MODEL_ACTIVATE:
            model = change["model"]
        else:
            raise ProtocolError(f"unknown change op {op!r}")
    return Replica(version=to, regions=replica.regions, offers=offers, model=model)


def replica_from_snapshot(snapshot: dict[str, Any], regions: tuple[str, ...]) -> Replica:
    check_envelope(snapshot, "snapshot")
    offers = {o["id"]: o for o in snapshot["offers"] if offered_in(o, regions)}
    return Replica(version=int(snapshot["version"]), regions=regions, offers=offers, model=snapshot.get("model"))


@dataclass
class SyncStatus:
    """What the edge reports about its sync: how fresh its copy is."""

    version: int = 0
    origin_version: int = 0
    last_contact: float | None = None  # time.time() of the last successful answer from the origin
    errors: int = 0
    last_error: str | None = None
    applied: int = 0

    def staleness_s(self) -> float | None:
        return None if self.last_contact is None else max(0.0, time.time() - self.last_contact)


OnReplica = Callable[[Replica, "Syncer"], Awaitable[None]]


@dataclass
class Syncer:
    """Keeps a replica in step with the origin and hands every new one to `on_replica`."""

    origin_url: str
    regions: tuple[str, ...]
    token: str
    on_replica: OnReplica
    wait_s: float = 25.0
    backoff_base_s: float = 0.2
    backoff_max_s: float = 10.0
    status: SyncStatus = field(default_factory=SyncStatus)
    replica: Replica | None = None
    _session: aiohttp.ClientSession | None = None

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}", PROTOCOL_HEADER: str(PROTOCOL_VERSION)}

    async def _get(self, path: str, params: dict[str, str], timeout_s: float) -> bytes:
        assert self._session is not None
        url = f"{self.origin_url.rstrip('/')}{path}"
        async with self._session.get(url, params=params, headers=self._headers(),
                                     timeout=aiohttp.ClientTimeout(total=timeout_s)) as resp:
            body = await resp.read()
            if resp.status == 409:
                raise _ResyncNeeded(body.decode(errors="replace"))
            if resp.status != 200:
                raise ProtocolError(f"GET {path}: HTTP {resp.status}: {body[:200].decode(errors='replace')}")
            self.status.last_contact = time.time()
            return body

    async def fetch_blob(self, sha256: str) -> bytes:
        """Download a content-addressed blob and check that its bytes hash to its name."""
        data = await self._get(f"/v1/sync/blobs/{sha256}", {}, timeout_s=120)
        if hashlib.sha256(data).hexdigest() != sha256:
            raise ProtocolError(f"blob {sha256} arrived corrupted")
        return data

    async def _take_snapshot(self) -> Replica:
        body = await self._get("/v1/sync/snapshot", {"regions": ",".join(self.regions)}, timeout_s=60)
        return replica_from_snapshot(unpack(body), self.regions)

    async def _next_replica(self, current: Replica) -> Replica:
        params = {"regions": ",".join(self.regions), "since": str(current.version), "wait": str(self.wait_s)}
        body = await self._get("/v1/sync/deltas", params, timeout_s=self.wait_s + 15)
        batch = unpack(body)
        replica = apply_deltas(current, batch)
        self.status.origin_version = max(self.status.origin_version, replica.version)
        return replica

    async def _publish(self, replica: Replica) -> None:
        await self.on_replica(replica, self)
        self.replica = replica
        self.status.version = replica.version
        self.status.origin_version = max(self.status.origin_version, replica.version)
        self.status.applied += 1

    async def run(self) -> None:
        """Sync until cancelled; any failure keeps the current replica and retries with backoff and jitter."""
        failures = 0
        async with aiohttp.ClientSession() as session:
            self._session = session
            while True:
                try:
                    if self.replica is None:
                        await self._publish(await self._take_snapshot())
                    else:
                        replica = await self._next_replica(self.replica)
                        if replica.version != self.replica.version:
                            await self._publish(replica)
                    failures = 0
                except asyncio.CancelledError:
                    raise
                except _ResyncNeeded as exc:
                    log.warning("origin asks for a resync: %s", exc)
                    self.replica = None
                except Exception as exc:  # noqa: BLE001 - the syncer must outlive any one bad answer
                    failures += 1
                    self.status.errors += 1
                    self.status.last_error = f"{type(exc).__name__}: {exc}"
                    delay = min(self.backoff_max_s, self.backoff_base_s * 2 ** min(failures, 10))
                    delay = random.uniform(0, delay)  # full jitter: edges must not retry in lockstep
                    log.warning("sync failed (%s); keeping version %s, retrying in %.2fs",
                                self.status.last_error, self.status.version, delay)
                    await asyncio.sleep(delay)


class _ResyncNeeded(Exception):
    pass
