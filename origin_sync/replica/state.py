"""The edge's replica of the origin's data at one version, and the pure checks that take it to the next: verified
delta batches and snapshots, the hash chain and the signed state digest."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from origin_sync.wire import digest
from origin_sync.wire.offers import offered_in
from origin_sync.wire.profiles import ProfileChange, is_pseudonym
from origin_sync.wire.protocol import (
    GENESIS_HASH,
    KIND_DELTAS,
    KIND_PROFILES,
    KIND_SNAPSHOT,
    OP_EXPERIMENT_DELETE,
    OP_EXPERIMENT_UPSERT,
    OP_MODEL_ACTIVATE,
    OP_OFFER_DELETE,
    OP_OFFER_UPSERT,
    OP_PROFILE_ERASE,
    OP_PROFILE_UPSERT,
    OP_SIGNING_KEYS,
    PROTOCOL_VERSION,
    IntegrityError,
    ProtocolError,
    canonical,
    chain_hash,
    unpack,
)
from origin_sync.wire.signing import merge_key_sets, validate_key_set

from .offers import PackedOffers

log = logging.getLogger("edgerec.sync")


@dataclass(frozen=True)
class Replica:
    """The edge's copy of the origin's data at one version; replaced whole, never patched in place."""

    version: int
    regions: tuple[str, ...]
    offers: Mapping[str, dict[str, Any]]  # held as PackedOffers (canonical bytes), whatever mapping is given
    model: dict[str, Any] | None  # {"version", "sha256", "manifest"} of the active model
    head_hash: bytes = GENESIS_HASH  # the origin's chain hash at `version`
    experiments: Mapping[str, dict[str, Any]] = field(default_factory=dict)  # by id, with variants' model refs
    key_set: dict[str, Any] | None = None  # the origin's signed signing-key set: announced and revoked key ids
    # The state's LtHash vector (digest.py), kept current at O(changed items) by apply_deltas; computed from the
    # content when not given (O(state)). Its checksum is what the origin's signed `state_digest` must equal.
    lanes: np.ndarray | None = field(default=None, compare=False, repr=False)
    # The profile summaries and erasures of the batch that made this replica, in version order, for the edge's
    # profile store (the syncer's `on_profiles`). Profiles are not part of the replica: the store keeps them.
    profile_changes: tuple[ProfileChange, ...] = field(default=(), compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "offers", PackedOffers.of(self.offers))
        if self.lanes is None:
            object.__setattr__(
                self,
                "lanes",
                digest.state_vector(self.offers.values(), self.model, self.experiments.values(), self.regions),
            )

    @property
    def state_digest(self) -> bytes:
        assert self.lanes is not None
        return digest.checksum(self.lanes)


def check_state_digest(replica: Replica, signed: object, where: str) -> None:
    """Refuse a state that the origin's signed digest does not vouch for (reason "digest")."""
    if not isinstance(signed, bytes):
        raise IntegrityError("digest", f"{where} carries no signed state digest")
    if signed != replica.state_digest:
        raise IntegrityError(
            "digest",
            f"{where}: the state at version {replica.version} does not match the state "
            f"digest the origin signed ({replica.state_digest.hex()[:16]} against "
            f"{signed.hex()[:16]})",
        )


def checked_key_set(value: object, held: dict[str, Any] | None) -> dict[str, Any] | None:
    """A key set that arrived signed (or from the edge's own disk), checked and merged with the revocations held."""
    if value is None:
        return held
    try:
        return merge_key_sets(held, validate_key_set(value))
    except IntegrityError:
        raise
    except ProtocolError as exc:
        raise IntegrityError("decode", f"malformed signing key set: {exc}") from None


def check_payload(payload: object, kind: str, regions: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(payload, dict) or payload.get("kind") != kind:
        raise ProtocolError(f"expected a {kind}")
    if payload.get("protocol") != PROTOCOL_VERSION:
        raise IntegrityError(
            "protocol", f"{kind}: protocol {payload.get('protocol')!r}, this edge speaks {PROTOCOL_VERSION}"
        )
    if tuple(payload.get("regions") or ()) != tuple(regions):
        # A payload for other regions (a cross-region replay) is refused even though it is well signed.
        raise IntegrityError(
            "region", f"{kind} is for regions {payload.get('regions')!r}, this edge syncs {list(regions)}"
        )
    return payload


def apply_deltas(replica: Replica, batch: dict[str, Any]) -> Replica:
    """Return the replica that results from a verified delta batch; the given replica is left untouched.

    The batch must start at the replica's version and chain hash (else it is replayed or out of order), its
    changes must be in version order, and re-hashing them must land on the batch's `to_hash`. Versions of other
    regions' changes are skipped; the signed `prev` hash of the next change bridges them.
    """
    check_payload(batch, KIND_DELTAS, replica.regions)
    start = batch.get("from")
    if start != replica.version:
        raise IntegrityError("order", f"delta batch starts at {start!r}, replica is at {replica.version}")
    if batch.get("from_hash") != replica.head_hash:
        raise IntegrityError("chain", f"delta batch does not continue the chain at version {replica.version}")
    to, to_hash = batch.get("to"), batch.get("to_hash")
    if not isinstance(to, int) or to < replica.version or not isinstance(to_hash, bytes):
        raise IntegrityError("order", f"delta batch ends at {to!r}, before the replica's version {replica.version}")
    offers = PackedOffers.of(replica.offers).packed()  # id -> canonical bytes
    experiments = dict(replica.experiments)
    model = replica.model
    key_set = replica.key_set
    profile_changes: list[ProfileChange] = []
    assert replica.lanes is not None
    lanes = replica.lanes.copy()

    def swap(old: list[tuple[str, bytes]], new: list[tuple[str, bytes]]) -> None:
        for _, element in old:
            np.subtract(lanes, digest.vector_of(element), out=lanes)
        for _, element in new:
            np.add(lanes, digest.vector_of(element), out=lanes)

    last, chained = replica.version, replica.head_hash
    touched_offers = touched_experiments = False
    for entry in batch.get("changes", []):
        try:
            prev, body = entry["prev"], entry["body"]
            change = unpack(body)
            version = change["version"]
        except (KeyError, TypeError, ProtocolError) as exc:
            raise IntegrityError("decode", f"malformed change entry: {exc}") from None
        if not isinstance(version, int) or version <= last or version > to:
            raise IntegrityError("order", f"change version {version!r} out of order after {last} (batch to {to})")
        if version == last + 1 and prev != chained:
            raise IntegrityError("chain", f"change {version} does not follow the hash of version {last}")
        chained, last = chain_hash(prev, body), version
        op = change.get("op")
        regions = replica.regions
        touched_offers = touched_offers or op in (OP_OFFER_UPSERT, OP_OFFER_DELETE)
        touched_experiments = touched_experiments or op in (OP_EXPERIMENT_UPSERT, OP_EXPERIMENT_DELETE)
        if op == OP_OFFER_UPSERT:
            offer = change["offer"]
            old = offers.pop(offer["id"], None)
            swap(digest.offer_elements(unpack(old), regions) if old else [], digest.offer_elements(offer, regions))
            if offered_in(offer, regions):
                offers[offer["id"].encode().decode()] = canonical(offer)  # not a string of the decoded batch
        elif op == OP_OFFER_DELETE:
            old = offers.pop(change["offer_id"], None)
            swap(digest.offer_elements(unpack(old), regions) if old else [], [])
        elif op == OP_MODEL_ACTIVATE:
            swap(digest.model_element(model), digest.model_element(change["model"]))
            model = change["model"]
        elif op == OP_EXPERIMENT_UPSERT:
            swap(
                digest.experiment_element(experiments.get(change["experiment"]["id"])),
                digest.experiment_element(change["experiment"]),
            )
            experiments[change["experiment"]["id"]] = change["experiment"]
        elif op == OP_EXPERIMENT_DELETE:
            swap(digest.experiment_element(experiments.pop(change["experiment_id"], None)), [])
        elif op in (OP_PROFILE_UPSERT, OP_PROFILE_ERASE):
            profile_changes.append(_profile_change(change, regions))
        elif op == OP_SIGNING_KEYS:
            # Trusted because the batch carrying it was verified with a key this edge trusts (never a revoked one).
            key_set = checked_key_set(change.get("key_set"), key_set)
        else:
            raise ProtocolError(f"unknown change op {op!r}")
    if last == to and chained != to_hash:
        raise IntegrityError("chain", f"re-hashing the changes does not give the chain hash at version {to}")
    result = Replica(
        version=to,
        regions=replica.regions,
        # A batch that touched no offer (or no experiment), e.g. one of profile summaries only, keeps the mapping
        # itself, so the edge can tell that its catalogs need no rebuild (`is`).
        offers=PackedOffers(offers) if touched_offers else replica.offers,
        model=model,
        head_hash=to_hash,
        experiments=experiments if touched_experiments else replica.experiments,
        key_set=key_set,
        lanes=lanes,
        profile_changes=tuple(profile_changes),
    )
    # A batch that reaches the origin's head carries the signed digest of the whole state there; one that stops
    # short (a full page) carries none, and the next page proves it.
    if "state_digest" in batch:
        check_state_digest(result, batch["state_digest"], f"delta batch to version {to}")
    return result


def _profile_change(change: dict[str, Any], regions: tuple[str, ...]) -> ProfileChange:
    """A profile change of a verified batch: a summary for a shopper of these regions, else an erasure (a summary
    that names none of them means the shopper is not this edge's to hold)."""
    pseudonym = change.get("pseudonym")
    if not is_pseudonym(pseudonym):
        raise IntegrityError("decode", "a profile change without a pseudonym")
    assert isinstance(pseudonym, str)
    summary, summary_ts = change.get("summary"), change.get("summary_ts")
    if change["op"] == OP_PROFILE_ERASE or not set(change.get("regions") or ()) & set(regions):
        return ProfileChange(pseudonym, None, 0.0)
    if not isinstance(summary, bytes) or not isinstance(summary_ts, (int, float)):
        raise IntegrityError("decode", "a profile summary without its bytes or time")
    return ProfileChange(pseudonym, summary, float(summary_ts))


def profiles_from_page(page: dict[str, Any], regions: tuple[str, ...], after: str) -> tuple[list[ProfileChange], str]:
    """The summaries of a verified page of /v1/sync/profiles and where the next page starts ("" after the last)."""
    check_payload(page, KIND_PROFILES, regions)
    if page.get("after") != after:
        raise IntegrityError("order", f"a profile page after {page.get('after')!r}, asked after {after!r}")
    changes = []
    for entry in page.get("profiles") or ():
        try:
            pseudonym, summary, summary_ts = entry
        except (TypeError, ValueError):
            raise IntegrityError("decode", "a profile page entry is [pseudonym, summary, summary_ts]") from None
        if not is_pseudonym(pseudonym) or not isinstance(summary, bytes) or not isinstance(summary_ts, int):
            raise IntegrityError("decode", "a profile page entry is [pseudonym, summary, summary_ts]")
        if changes and pseudonym <= changes[-1].pseudonym or pseudonym <= after:
            raise IntegrityError("order", "a profile page out of pseudonym order")
        changes.append(ProfileChange(pseudonym, summary, float(summary_ts)))
    following = page.get("next")
    if following is not None and (not changes or following != changes[-1].pseudonym):
        raise IntegrityError("order", "a profile page whose next does not follow its last entry")
    return changes, following or ""


def replica_from_snapshot(snapshot: dict[str, Any], regions: tuple[str, ...]) -> Replica:
    check_payload(snapshot, KIND_SNAPSHOT, regions)
    head_hash = snapshot.get("head_hash")
    if not isinstance(snapshot.get("version"), int) or not isinstance(head_hash, bytes):
        raise IntegrityError("decode", "snapshot without version or chain hash")
    offered = {o["id"]: o for o in snapshot["offers"] if offered_in(o, regions)}
    experiments = {e["id"]: e for e in snapshot.get("experiments") or []}
    offers = PackedOffers.of(offered)
    replica = Replica(
        version=snapshot["version"],
        regions=regions,
        offers=offers,
        model=snapshot.get("model"),
        head_hash=head_hash,
        experiments=experiments,
        key_set=checked_key_set(snapshot.get("signing_keys"), None),
        # From the offers as they arrived, not decoded again from their canonical bytes.
        lanes=digest.state_vector(offered.values(), snapshot.get("model"), experiments.values(), regions),
    )
    check_state_digest(replica, snapshot.get("state_digest"), f"snapshot at version {replica.version}")
    return replica
