"""Signing key rotation: the origin's key set travels signed in the change log and in snapshots; an edge trusts
what it announces, refuses what it revokes (even a configured key), keeps that across restarts, and never takes an
announcement from a key it does not trust."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from origin_sync.origin.keyring import KeyRing, KeyRingError
from origin_sync.replica import LocalCopy, Replica, apply_deltas, replica_from_snapshot
from origin_sync.wire.protocol import GENESIS_HASH, PROTOCOL_VERSION, IntegrityError, ProtocolError
from origin_sync.wire.signing import (
    Signer,
    Verifier,
    merge_key_sets,
    open_envelope,
    public_key_b64,
    seal,
    validate_key_set,
)
from tests.origin_sync.test_replica import _batch, _upsert, signed_at, with_digest

OLD, NEW, ROGUE = (Signer(Ed25519PrivateKey.generate()) for _ in range(3))
RING = KeyRing([OLD, NEW])


def _replica() -> Replica:
    return Replica(version=0, regions=("GB",), offers={}, model=None, head_hash=GENESIS_HASH)


def _announce_then_activate_then_revoke() -> tuple[dict, dict, dict]:
    announced = RING.announced(None, NEW.key_id)
    activated = RING.activated(announced, NEW.key_id)
    revoked = RING.revoked(activated, OLD.key_id)
    return announced, activated, revoked


def _keys_change(version: int, key_set: dict) -> dict:
    return {"version": version, "op": "signing_keys", "key_set": key_set}


def test_the_key_ring_steps_through_announce_activate_revoke():
    announced, activated, revoked = _announce_then_activate_then_revoke()
    statuses = lambda ks: {e["key_id"]: e["status"] for e in ks["keys"]}  # noqa: E731
    assert statuses(announced) == {OLD.key_id: "active", NEW.key_id: "next"} and announced["active"] == OLD.key_id
    assert statuses(activated) == {OLD.key_id: "next", NEW.key_id: "active"} and activated["active"] == NEW.key_id
    assert statuses(revoked) == {OLD.key_id: "revoked", NEW.key_id: "active"}
    assert validate_key_set(revoked) == revoked


@pytest.mark.parametrize(
    "step,stored,key_id,code",
    [
        ("activated", None, NEW.key_id, "not_announced"),  # edges must learn a key before it signs
        ("revoked", None, OLD.key_id, "key_active"),  # the key that signs cannot be revoked
        ("announced", None, ROGUE.key_id, "unknown_key"),  # the origin holds no such private key
        ("announced", "revoked", OLD.key_id, "key_revoked"),  # a revoked key never comes back
        ("activated", "revoked", OLD.key_id, "key_revoked"),
        ("announced", None, "not-a-key-id", "invalid_key_id"),
    ],
)
def test_the_key_ring_refuses_steps_out_of_order(step, stored, key_id, code):
    key_set = _announce_then_activate_then_revoke()[2] if stored == "revoked" else None
    with pytest.raises(KeyRingError) as refused:
        getattr(RING, step)(key_set, key_id)
    assert refused.value.code == code and 400 <= refused.value.status < 500


def test_the_origin_signs_with_a_key_the_edge_trusts_during_the_overlap():
    ring = KeyRing([OLD, NEW])
    ring.adopt(_announce_then_activate_then_revoke()[1])  # NEW active, OLD still accepted
    assert ring.signer_for(None) is NEW and ring.signer_for(frozenset({NEW.key_id})) is NEW
    assert ring.signer_for(frozenset({OLD.key_id})) is OLD  # an edge that has not learnt NEW yet
    ring.adopt(_announce_then_activate_then_revoke()[2])
    assert ring.signer_for(frozenset({OLD.key_id})) is NEW  # never a revoked key


def test_an_announced_key_is_trusted_and_a_revoked_one_refused_even_when_configured():
    announced, activated, revoked = _announce_then_activate_then_revoke()
    configured = Verifier([OLD.public_key])  # the edge's EDGEREC_ORIGIN_PUBLIC_KEY lists only the old key
    replica = apply_deltas(_replica(), _batch(_replica(), [_keys_change(1, announced)]))
    assert open_envelope(seal("deltas", {"n": 1}, NEW), "deltas", configured.with_key_set(replica.key_set))["n"] == 1
    replica = apply_deltas(replica, _batch(replica, [_keys_change(2, activated), _keys_change(3, revoked)]))
    trusted = configured.with_key_set(replica.key_set)
    with pytest.raises(IntegrityError) as refused:
        open_envelope(seal("deltas", {"n": 2}, OLD), "deltas", trusted)  # a hand-made delta signed by the old key
    assert refused.value.reason == "revoked_key"
    both = Verifier([OLD.public_key, NEW.public_key]).with_key_set(replica.key_set)
    assert set(both.keys) == {NEW.key_id} and both.revoked == {OLD.key_id}


def test_an_announcement_signed_by_an_unknown_or_revoked_key_is_never_applied():
    rogue_set = validate_key_set(
        {
            "active": ROGUE.key_id,
            "keys": [{"key_id": ROGUE.key_id, "public_key": public_key_b64(ROGUE.public_key), "status": "active"}],
        }
    )
    batch = _batch(_replica(), [_keys_change(1, rogue_set)])
    with pytest.raises(IntegrityError) as refused:
        open_envelope(seal("deltas", batch, ROGUE), "deltas", Verifier([OLD.public_key]))
    assert refused.value.reason == "unknown_key"
    revoked = _announce_then_activate_then_revoke()[2]
    after_revocation = Verifier([OLD.public_key, NEW.public_key]).with_key_set(revoked)
    with pytest.raises(IntegrityError) as refused:
        open_envelope(seal("deltas", batch, OLD), "deltas", after_revocation)
    assert refused.value.reason == "revoked_key"


def test_a_revocation_is_never_undone_by_a_later_or_older_key_set():
    announced, _, revoked = _announce_then_activate_then_revoke()
    both_valid = {
        "active": NEW.key_id,
        "keys": [{**e, "status": "active" if e["key_id"] == NEW.key_id else "next"} for e in announced["keys"]],
    }
    assert merge_key_sets(revoked, both_valid) == revoked
    with pytest.raises(IntegrityError):  # a set that makes the revoked key active again is refused whole
        merge_key_sets(revoked, announced)


@pytest.mark.parametrize(
    "bad",
    [
        {"active": "x", "keys": []},
        {"active": OLD.key_id, "keys": [{"key_id": NEW.key_id, "public_key": "AAAA", "status": "active"}]},
        {"active": OLD.key_id, "keys": [{"key_id": OLD.key_id, "public_key": "AAAA", "status": "weird"}]},
    ],
)
def test_a_malformed_key_set_is_a_protocol_error(bad):
    with pytest.raises(ProtocolError):
        validate_key_set(bad)
    with pytest.raises(IntegrityError) as refused:
        apply_deltas(_replica(), _batch(_replica(), [_keys_change(1, bad)]))
    assert refused.value.reason == "decode"


def test_a_snapshot_carries_the_key_set_and_the_persisted_copy_keeps_it(tmp_path):
    _, activated, revoked = _announce_then_activate_then_revoke()
    snapshot = with_digest(
        {
            "protocol": PROTOCOL_VERSION,
            "kind": "snapshot",
            "regions": ["GB"],
            "version": 7,
            "head_hash": GENESIS_HASH,
            "offers": [],
            "model": None,
            "experiments": [],
            "signing_keys": activated,
        }
    )
    replica = replica_from_snapshot(snapshot, ("GB",))
    assert replica.key_set == activated
    # The edge restarts knowing only the old key from its configuration; its copy was signed with the new one.
    copy = LocalCopy(tmp_path)
    proof = seal("snapshot", snapshot, NEW)
    copy.save(replica, "snapshot", proof, None, 7)
    loaded, _, _ = copy.load(Verifier([OLD.public_key]), ("GB",))
    assert loaded.key_set == activated
    # A revocation learnt after the snapshot stays in force after a restart.
    later = apply_deltas(loaded, _batch(loaded, [_keys_change(8, revoked), _upsert(9, "a")]))
    copy.save(
        later,
        "deltas",
        seal("deltas", signed_at(_batch(loaded, [_keys_change(8, revoked), _upsert(9, "a")]), later), NEW),
        None,
        9,
    )
    reloaded, _, _ = copy.load(Verifier([OLD.public_key]), ("GB",))
    assert Verifier([OLD.public_key]).with_key_set(reloaded.key_set).revoked == {OLD.key_id}
