"""Verifying and applying snapshots and delta batches to the edge's replica: signatures, the hash chain, order,
region scoping, and the persisted copy on disk."""

from __future__ import annotations

import msgpack
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from origin_sync.replica import LocalCopy, Replica, apply_deltas, replica_from_snapshot
from origin_sync.wire import digest
from origin_sync.wire.protocol import (
    GENESIS_HASH,
    PROTOCOL_VERSION,
    IntegrityError,
    ProtocolError,
    canonical,
    chain_hash,
)
from origin_sync.wire.signing import (
    Signer,
    Verifier,
    open_envelope,
    seal,
)
from tests.conftest import make_offer

SIGNER = Signer(Ed25519PrivateKey.generate())
VERIFIER = Verifier([SIGNER.public_key])


def _chain(start_hash: bytes, changes: list[dict]) -> tuple[list[dict], bytes]:
    entries, digest = [], start_hash
    for change in changes:
        body = canonical(change)
        entries.append({"prev": digest, "body": body})
        digest = chain_hash(digest, body)
    return entries, digest


def _batch(replica: Replica, changes: list[dict], to: int | None = None, **overrides) -> dict:
    entries, digest = _chain(replica.head_hash, changes)
    batch = {
        "protocol": PROTOCOL_VERSION,
        "kind": "deltas",
        "regions": list(replica.regions),
        "from": replica.version,
        "from_hash": replica.head_hash,
        "to": to if to is not None else (changes[-1]["version"] if changes else replica.version),
        "to_hash": digest,
        "head": 0,
        "changes": entries,
    }
    batch.update(overrides)
    return batch


def with_digest(snapshot: dict) -> dict:
    """A hand-made snapshot with the state digest the origin would sign for it."""
    return {
        **snapshot,
        "state_digest": digest.state_digest(
            snapshot["offers"], snapshot.get("model"), snapshot.get("experiments") or [], snapshot["regions"]
        ),
    }


def signed_at(batch: dict, replica: Replica) -> dict:
    """A batch carrying the digest of `replica`, the state it leads to (as the origin signs at its head)."""
    return {**batch, "state_digest": replica.state_digest}


def _replica() -> Replica:
    return Replica(
        version=3,
        regions=("GB",),
        offers={"a": make_offer("a", "10001")},
        model=None,
        head_hash=chain_hash(GENESIS_HASH, b"v3"),
    )


def _upsert(version: int, offer_id: str, region: str = "GB") -> dict:
    return {"version": version, "op": "offer_upsert", "offer": make_offer(offer_id, "10002", region=region)}


def test_a_batch_is_applied_to_a_new_replica_and_the_old_one_is_untouched():
    old = _replica()
    new = apply_deltas(old, _batch(old, [_upsert(4, "b"), {"version": 5, "op": "offer_delete", "offer_id": "a"}]))
    assert set(new.offers) == {"b"} and new.version == 5 and new.head_hash != old.head_hash
    assert set(old.offers) == {"a"} and old.version == 3


def test_a_replayed_or_out_of_order_batch_is_refused():
    replica = _replica()
    with pytest.raises(IntegrityError, match="starts at 2") as info:
        apply_deltas(replica, {**_batch(replica, []), "from": 2})
    assert info.value.reason == "order"
    newer = apply_deltas(replica, _batch(replica, [_upsert(4, "b")]))
    replayed = _batch(replica, [_upsert(4, "b")])
    with pytest.raises(IntegrityError, match="starts at 3"):
        apply_deltas(newer, replayed)


def test_changes_out_of_order_or_beyond_the_batch_are_refused():
    replica = _replica()
    with pytest.raises(IntegrityError, match="out of order"):
        apply_deltas(replica, _batch(replica, [_upsert(5, "b"), _upsert(4, "c")], to=6))
    with pytest.raises(IntegrityError, match="out of order"):
        apply_deltas(replica, _batch(replica, [_upsert(5, "b")], to=4))


def test_a_batch_that_does_not_continue_the_hash_chain_is_refused():
    replica = _replica()
    with pytest.raises(IntegrityError) as info:
        apply_deltas(replica, {**_batch(replica, [_upsert(4, "b")]), "from_hash": GENESIS_HASH})
    assert info.value.reason == "chain"
    batch = _batch(replica, [_upsert(4, "b")])
    batch["changes"][0]["body"] = canonical(_upsert(4, "evil"))  # a change swapped under the same hashes
    with pytest.raises(IntegrityError, match="chain hash"):
        apply_deltas(replica, batch)


def test_changes_of_other_regions_are_bridged_by_the_signed_prev_hash():
    replica = _replica()
    entries, _ = _chain(replica.head_hash, [_upsert(4, "de", region="DE")])
    digest4 = chain_hash(entries[0]["prev"], entries[0]["body"])
    tail, digest5 = _chain(digest4, [_upsert(5, "b")])
    batch = {**_batch(replica, []), "to": 5, "to_hash": digest5, "changes": tail}  # version 4 filtered out
    new = apply_deltas(replica, batch)
    assert new.version == 5 and set(new.offers) == {"a", "b"} and new.head_hash == digest5


def test_an_unknown_protocol_version_operation_or_region_is_refused():
    replica = _replica()
    with pytest.raises(IntegrityError, match="protocol"):
        apply_deltas(replica, {**_batch(replica, []), "protocol": PROTOCOL_VERSION + 1})
    with pytest.raises(ProtocolError, match="unknown change op"):
        apply_deltas(replica, _batch(replica, [{"version": 4, "op": "drop_tables"}]))
    with pytest.raises(IntegrityError) as info:
        apply_deltas(replica, {**_batch(replica, []), "regions": ["DE"]})
    assert info.value.reason == "region"


def test_an_offer_moved_out_of_the_region_is_dropped():
    replica = _replica()
    new = apply_deltas(
        replica, _batch(replica, [{"version": 4, "op": "offer_upsert", "offer": make_offer("a", "10001", region="DE")}])
    )
    assert new.offers == {}


def test_a_snapshot_keeps_only_the_edge_regions():
    snap = {
        "protocol": PROTOCOL_VERSION,
        "kind": "snapshot",
        "regions": ["DE"],
        "version": 9,
        "model": None,
        "head_hash": GENESIS_HASH,
        "offers": [make_offer("a", "1"), make_offer("b", "2", region="DE")],
    }
    replica = replica_from_snapshot(with_digest(snap), ("DE",))
    assert set(replica.offers) == {"b"} and replica.version == 9


def _sealed_snapshot(offers: int = 50) -> bytes:
    return seal(
        "snapshot",
        with_digest(
            {
                "regions": ["GB"],
                "version": 7,
                "head_hash": GENESIS_HASH,
                "model": None,
                "offers": [make_offer(f"o{i}", "10001") for i in range(offers)],
            }
        ),
        SIGNER,
    )


def test_a_sealed_payload_opens_only_intact_and_with_a_trusted_key():
    sealed = _sealed_snapshot()
    assert msgpack.unpackb(sealed)["encoding"] == "zlib"
    assert len(open_envelope(sealed, "snapshot", VERIFIER)["offers"]) == 50
    cases = {
        "truncated": sealed[: len(sealed) // 2],
        "flipped byte": sealed[:-40] + bytes([sealed[-40] ^ 0x01]) + sealed[-39:],
        "other key": seal("snapshot", {"regions": ["GB"], "version": 7}, Signer(Ed25519PrivateKey.generate())),
    }
    for name, data in cases.items():
        with pytest.raises(IntegrityError):
            open_envelope(data, "snapshot", VERIFIER)
    small = seal("deltas", {"regions": ["GB"], "from": 1}, SIGNER)
    with pytest.raises(IntegrityError, match="expected a snapshot"):
        open_envelope(small, "snapshot", VERIFIER)
    envelope = msgpack.unpackb(small)
    envelope["sig"] = bytes(64)
    with pytest.raises(IntegrityError, match="bad signature"):
        open_envelope(msgpack.packb(envelope), "deltas", VERIFIER)


def test_the_persisted_copy_round_trips_and_a_damaged_file_is_refused(tmp_path):
    local = LocalCopy(tmp_path)
    sealed = _sealed_snapshot(5)
    replica = replica_from_snapshot(open_envelope(sealed, "snapshot", VERIFIER), ("GB",))
    local.save(replica, "snapshot", sealed, 123.0, 7)
    loaded, _, record = local.load(VERIFIER, ("GB",))
    assert loaded == replica and record["last_contact"] == 123.0

    batch_payload = _batch(replica, [_upsert(8, "b")])
    newer = apply_deltas(replica, batch_payload)
    batch_payload = signed_at(batch_payload, newer)
    sealed_batch = seal("deltas", {k: v for k, v in batch_payload.items() if k not in ("kind", "protocol")}, SIGNER)
    local.save(newer, "deltas", sealed_batch, 124.0, 8)
    assert local.load(VERIFIER, ("GB",))[0] == newer

    raw = bytearray(local.replica_path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    local.replica_path.write_bytes(bytes(raw))
    with pytest.raises(IntegrityError):
        local.load(VERIFIER, ("GB",))
    local.replica_path.write_bytes(bytes(raw[:100]))
    with pytest.raises(IntegrityError):
        local.load(VERIFIER, ("GB",))
    with pytest.raises(IntegrityError):
        LocalCopy(tmp_path).load(VERIFIER, ("DE",))
