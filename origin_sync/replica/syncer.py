"""The edge's syncer (aiohttp client): verified snapshot, then long-polled verified deltas, each applied to a new
replica that is handed over whole; the last good replica and the model blobs are kept on local disk."""

import asyncio
import base64
import binascii
import hashlib
import logging
import random
import ssl
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Awaitable, Callable, Mapping

import aiohttp

from edgerec.core.files import NotFound, write_atomically
from edgerec.core.tracing import DISABLED, Tracing
from origin_sync.wire.profiles import ProfileChange
from origin_sync.wire.protocol import (
    KEY_ID_HEADER,
    KIND_DELTAS,
    KIND_SNAPSHOT,
    PROTOCOL_HEADER,
    PROTOCOL_VERSION,
    SIGNATURE_HEADER,
    WRITE_TRACES_HEADER,
    IntegrityError,
    ProtocolError,
)
from origin_sync.wire.signing import (
    TRUSTED_KEYS_HEADER,
    Verifier,
    blob_signing_bytes,
    merge_key_sets,
    open_envelope,
)

from .local import LocalCopy
from .profile_pages import ProfileLoad
from .state import Replica, apply_deltas, replica_from_snapshot
from .status import SyncStatus

log = logging.getLogger("edgerec.sync")


class _ResyncNeeded(Exception):
    def __init__(self, message: str, rollback: bool = False) -> None:
        super().__init__(message)
        self.rollback = rollback


OnReplica = Callable[[Replica, "Syncer"], Awaitable[None]]
# Receives the verified profile summaries and erasures of each delta batch, in version order, before the replica
# that follows them is handed over: an exception holds the batch back, and it is fetched and applied again.
OnProfiles = Callable[[tuple[ProfileChange, ...]], Awaitable[None]]


@dataclass
class Syncer:
    """Keeps a replica in step with the origin and hands every new one to `on_replica`.

    A payload that fails any check is refused: the current replica stays, the refusal is counted by reason in
    `status.rejected` and logged, and the syncer retries with backoff and full jitter. With a `data_dir`, the
    last good replica and the model blobs survive restarts, so an edge can serve with the origin down.

    `origin_url` may name several origins, comma-separated (origins on one database). The syncer talks to one at a
    time and moves to the next when that one fails or answers something refused, keeping its version: the next
    origin resumes from it, and one whose chain does not extend the replica is refused like any bad payload. One
    DNS name with several addresses needs no list: aiohttp tries each address in turn.
    """

    origin_url: str
    regions: tuple[str, ...]
    token: str
    on_replica: OnReplica
    verifier: Verifier | None = None
    data_dir: Path | None = None
    wait_s: float = 25.0
    backoff_base_s: float = 0.2
    backoff_max_s: float = 10.0
    persist_retry_s: float = 5.0
    status: SyncStatus = field(default_factory=SyncStatus)
    replica: Replica | None = None
    ssl_context: ssl.SSLContext | None = None  # verifies the origin (CA bundle) and holds the mutual-TLS certificate
    tracing: Tracing = DISABLED  # a span a sync request, its traceparent sent to the origin
    write_traces: str = ""  # the traceparents of the sampled admin writes the delta being handed over carries
    on_profiles: OnProfiles | None = None  # the edge's profile store: put_summary / erase (see OnProfiles)
    _session: aiohttp.ClientSession | None = None

    def __post_init__(self) -> None:
        self.local = LocalCopy(self.data_dir) if self.data_dir is not None else None
        self._proof: tuple[str, bytes] | None = None
        self._need_snapshot = False
        self._allow_rollback = False
        self._persist_wanted = asyncio.Event()
        self._healthy = False  # the last request to the origin succeeded
        self._anchors = self.verifier  # the configured keys; `verifier` adds what the origin's key set says
        self.origins = tuple(u.strip().rstrip("/") for u in self.origin_url.split(",") if u.strip())
        if not self.origins:
            raise ValueError("a Syncer needs at least one origin URL")
        self._origin_index = 0
        self._behind: set[str] = set()  # origins that said they are behind this edge's copy
        self.status.origin = self.origins[0]

    def __repr__(self) -> str:  # never show the token
        return f"Syncer(origin_url={self.origin_url!r}, regions={self.regions!r}, version={self.status.version})"

    @property
    def current_origin(self) -> str:
        return self.origins[self._origin_index]

    def _fail_over(self, why: str) -> bool:
        """Move to the next origin, if there is another; True when it moved."""
        if len(self.origins) < 2:
            return False
        before = self.current_origin
        self._origin_index = (self._origin_index + 1) % len(self.origins)
        self.status.origin = self.current_origin
        self.status.failovers += 1
        self._healthy = False  # the next origin's first poll answers at once, proving it is there
        version = self.status.version
        log.warning("sync: leaving origin %s (%s) for %s, from version %d", before, why, self.current_origin, version)
        return True

    def _headers(self) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self.token}", PROTOCOL_HEADER: str(PROTOCOL_VERSION)}
        if self.verifier is not None:
            headers[TRUSTED_KEYS_HEADER] = ",".join(sorted(self.verifier.keys))
        return headers

    async def _get(self, path: str, params: dict[str, str], timeout_s: float) -> tuple[bytes, Mapping[str, str]]:
        assert self._session is not None
        url = f"{self.current_origin}{path}"
        with self.tracing.span(
            "sync GET /v1/sync/blobs/{sha256}" if path.startswith("/v1/sync/blobs/") else f"sync GET {path}",
            attributes={
                "sync.since": params.get("since", ""),
                "sync.regions": params.get("regions", ""),
                "server.address": self.current_origin,
            },
            client=True,
        ):
            return await self._fetch(path, url, params, timeout_s)

    async def _fetch(
        self, path: str, url: str, params: dict[str, str], timeout_s: float
    ) -> tuple[bytes, Mapping[str, str]]:
        assert self._session is not None
        async with self._session.get(
            url,
            params=params,
            headers=self.tracing.inject(self._headers()),
            timeout=aiohttp.ClientTimeout(total=timeout_s),
        ) as resp:
            body = await resp.read()
            if resp.status == 200:
                return body, resp.headers
            text = body[:300].decode(errors="replace")
            if resp.status == 410:
                raise _ResyncNeeded(f"the origin compacted its log past version {params.get('since')}")
            if resp.status == 409 and "ahead_of_origin" in text:
                raise _ResyncNeeded(text, rollback=True)
            if resp.status == 409 and "protocol_mismatch" in text:
                raise IntegrityError("protocol", f"origin and edge disagree on the protocol: {text}")
            raise ProtocolError(f"GET {path}: HTTP {resp.status}: {text}")

    async def fetch_blob(self, sha256: str) -> bytes:
        """A model blob: from the local cache when it is there and intact, else downloaded, verified and cached."""
        if self.local is not None:
            try:
                return await asyncio.to_thread(self.local.blobs.get, sha256)
            except NotFound as exc:
                if self._session is None:  # loading from disk, before any connection to the origin
                    raise IntegrityError("blob", f"{exc}, and the origin is not reached yet") from None
        data, headers = await self._get(f"/v1/sync/blobs/{sha256}", {}, timeout_s=120)
        try:
            signature = base64.b64decode(headers.get(SIGNATURE_HEADER, ""), validate=True)
        except (binascii.Error, ValueError):
            signature = b""
        assert self.verifier is not None
        self.verifier.verify(headers.get(KEY_ID_HEADER), signature or None, blob_signing_bytes(sha256))
        if hashlib.sha256(data).hexdigest() != sha256:
            raise IntegrityError("blob", f"blob {sha256} arrived corrupted")
        if self.local is not None:
            try:
                await asyncio.to_thread(write_atomically, self.local.blobs.path(sha256), data)
            except OSError as exc:
                self.status.persist_failures += 1
                log.error("could not cache blob %s on disk (%s); using it from memory", sha256, exc)
        return data

    def reload_profiles(self) -> None:
        """The profile store lost what it held: a snapshot loads the regions' summaries again (see below)."""
        self._need_snapshot |= self.on_profiles is not None

    async def _take_snapshot(self) -> None:
        assert self.verifier is not None
        body, _ = await self._get("/v1/sync/snapshot", {"regions": ",".join(self.regions)}, timeout_s=120)
        payload = await asyncio.to_thread(open_envelope, body, KIND_SNAPSHOT, self.verifier)
        current = self.replica
        replica = replica_from_snapshot(payload, self.regions)
        # The replica holds its own packed copy of the offers: the decoded ones (about 90 MB for 100,000) go now,
        # not after the profiles below have loaded in between them and left the heap full of holes.
        payload.pop("offers", None)
        if current is not None:
            replica = replace(replica, key_set=merge_key_sets(current.key_set, replica.key_set))
        if current is not None and not self._allow_rollback:
            if replica.version < current.version:
                raise IntegrityError(
                    "order",
                    f"snapshot at version {replica.version} is older than the replica's {current.version} (replayed?)",
                )
            if replica.version == current.version and replica.head_hash != current.head_hash:
                raise IntegrityError("chain", f"snapshot at version {replica.version} forks from the replica")
        if self._allow_rollback and current is not None and replica.version < current.version:
            log.error(
                "origin is behind this edge (restored database?): going back from version %d to %d",
                current.version,
                replica.version,
            )
        if self.on_profiles is not None:
            # A snapshot carries no profiles: the regions' summaries are loaded, page by page, before the replica
            # is handed over and persisted, so that a copy on disk never stands for a store not loaded yet. A
            # failure takes the snapshot again and loads from the first page (an edge serving keeps serving).
            loaded = await ProfileLoad().run(self._get, self.verifier, self.regions, self.on_profiles)
            self.status.profile_changes += loaded
        self._contact(payload)
        self.status.snapshots += 1
        self._need_snapshot = self._allow_rollback = False
        if (
            current is None
            or replica.version != current.version
            or replica.head_hash != current.head_hash
            or replica.state_digest != current.state_digest
        ):
            await self._publish(replica, (KIND_SNAPSHOT, body))

    async def _follow_deltas(self, current: Replica) -> None:
        assert self.verifier is not None
        # After a failure the first poll answers at once: a verified answer is what proves the origin is back.
        wait = self.wait_s if self._healthy else 0.0
        params = {"regions": ",".join(self.regions), "since": str(current.version), "wait": str(wait)}
        self.status.poll_open = self._healthy
        try:
            body, headers = await self._get("/v1/sync/deltas", params, timeout_s=wait + 15)
        finally:
            self.status.poll_open = False
        batch = open_envelope(body, KIND_DELTAS, self.verifier)
        replica = apply_deltas(current, batch)
        self._contact(batch)
        if replica.profile_changes and self.on_profiles is not None:
            await self.on_profiles(replica.profile_changes)
            self.status.profile_changes += len(replica.profile_changes)
        if replica.version != current.version:
            self.write_traces = headers.get(WRITE_TRACES_HEADER, "")  # for on_replica's spans (edge_node.app)
            await self._publish(replica, (KIND_DELTAS, body))

    def _contact(self, payload: dict[str, Any]) -> None:
        self.status.last_contact = time.time()
        head = payload.get("head", payload.get("version"))
        if isinstance(head, int):
            self.status.origin_version = head

    async def _publish(self, replica: Replica, proof: tuple[str, bytes], persist: bool = True) -> None:
        await self.on_replica(replica, self)
        self.replica, self._proof = replica, proof
        if self._anchors is not None:
            self.verifier = self._anchors.with_key_set(replica.key_set)
        self.status.version = replica.version
        self.status.origin_version = max(self.status.origin_version, replica.version)
        self.status.applied += 1
        if persist and self.local is not None:
            self._persist_wanted.set()

    async def _persist_forever(self) -> None:
        """Write the newest replica after each change (coalesced: a burst of changes costs one write)."""
        assert self.local is not None
        while True:
            await self._persist_wanted.wait()
            self._persist_wanted.clear()
            replica, proof = self.replica, self._proof
            if replica is None or proof is None or replica.version == self.status.persisted_version:
                continue
            try:
                await asyncio.to_thread(
                    self.local.save, replica, proof[0], proof[1], self.status.last_contact, self.status.origin_version
                )
                self.status.persisted_version = replica.version
            except OSError as exc:
                # Serving from memory goes on; the write is retried until the disk takes it again.
                self.status.persist_failures += 1
                log.error(
                    "could not persist version %d under %s (%s); serving from memory, retrying in %.0fs",
                    replica.version,
                    self.local.data_dir,
                    exc,
                    self.persist_retry_s,
                )
                await asyncio.sleep(self.persist_retry_s)
                self._persist_wanted.set()

    async def load_local(self) -> bool:
        """Serve the persisted replica, if there is a trustworthy one; True when it was handed over."""
        if self.local is None or self.verifier is None:
            return False
        try:
            loaded = await asyncio.to_thread(self.local.load, self.verifier, self.regions)
        except (IntegrityError, ProtocolError, OSError, KeyError, TypeError) as exc:
            reason = exc.reason if isinstance(exc, IntegrityError) else "disk"
            self.status.rejected[reason] += 1
            log.error("persisted replica refused (%s); starting from the origin", exc)
            return False
        if loaded is None:
            return False
        replica, proof, record = loaded
        self.status.last_contact = record.get("last_contact")
        self.status.origin_version = int(record.get("origin_version") or 0)
        try:
            await self._publish(replica, proof, persist=False)
        except Exception as exc:  # noqa: BLE001 - e.g. its model blob is gone and the origin is down
            reason = exc.reason if isinstance(exc, IntegrityError) else "disk"
            self.status.rejected[reason] += 1
            log.error(
                "could not serve the persisted replica at version %d (%s: %s); starting from the origin",
                replica.version,
                reason,
                f"{type(exc).__name__}: {exc}" if str(exc) else repr(exc),
            )
            return False
        self.status.persisted_version = replica.version
        self.status.loaded_from_disk = True
        log.info("serving persisted version %d from %s", replica.version, self.local.replica_path)
        return True

    async def run(self) -> None:
        """Sync until cancelled; any failure keeps the current replica and retries with backoff and jitter."""
        if self.verifier is None:
            raise ValueError("a Syncer needs the origin's public key(s) to verify what it applies")
        if self.replica is None:
            await self.load_local()
        persister = asyncio.create_task(self._persist_forever()) if self.local is not None else None
        failures = 0
        try:
            connector = aiohttp.TCPConnector(ssl=self.ssl_context if self.ssl_context is not None else True)
            async with aiohttp.ClientSession(auto_decompress=False, connector=connector) as session:
                self._session = session
                while True:
                    try:
                        if self.replica is None or self._need_snapshot:
                            await self._take_snapshot()
                        else:
                            await self._follow_deltas(self.replica)
                        failures = 0
                        self._healthy = True
                        self._behind.clear()
                    except asyncio.CancelledError:
                        raise
                    except _ResyncNeeded as exc:
                        if exc.rollback:
                            # An origin behind this copy may be a lagging one: go back only when every origin is.
                            self._behind.add(self.current_origin)
                            if len(self._behind) < len(self.origins) and self._fail_over("behind this edge"):
                                continue
                        log.warning("taking a snapshot: %s", exc)
                        self._need_snapshot = True
                        self._allow_rollback = exc.rollback
                    except Exception as exc:  # noqa: BLE001 - the syncer must outlive any one bad answer
                        failures += 1
                        self._healthy = False
                        self._count_failure(exc)
                        if isinstance(exc, IntegrityError) and exc.reason == "digest":
                            # The copy (or the batch) disagrees with the signed state: only a fresh snapshot, itself
                            # checked against its digest, can be proven again.
                            self._need_snapshot = True
                        if self._fail_over(self.status.last_error or "failed"):
                            # A fresh origin gets its chance at once; the backoff grows once all were tried.
                            if failures < len(self.origins):
                                continue
                        delay = min(self.backoff_max_s, self.backoff_base_s * 2 ** min(failures, 10))
                        delay = random.uniform(0, delay)  # full jitter: edges must not retry in lockstep
                        await asyncio.sleep(delay)
        finally:
            if persister is not None:
                persister.cancel()

    def _count_failure(self, exc: Exception) -> None:
        self.status.errors += 1
        self.status.last_error = f"{type(exc).__name__}: {exc}"[:500]
        if isinstance(exc, IntegrityError):
            self.status.rejected[exc.reason] += 1
            log.error(
                "refused a payload from the origin (%s: %s); keeping version %d", exc.reason, exc, self.status.version
            )
        elif isinstance(exc, aiohttp.ClientPayloadError):
            self.status.rejected["truncated"] += 1
            log.error("refused a truncated answer from the origin (%s); keeping version %d", exc, self.status.version)
        else:
            log.warning("sync failed (%s); keeping version %d", self.status.last_error, self.status.version)
