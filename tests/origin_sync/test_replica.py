"""Applying snapshots and delta batches to the edge's replica: order, gaps and region scoping."""

from __future__ import annotations

import pytest

from origin_sync.client import Replica, apply_deltas, replica_from_snapshot
from origin_sync.protocol import PROTOCOL_VERSION, ProtocolError
from tests.conftest import make_offer


def _batch(frm: int, to: int, changes: list[dict]) -> dict:
    return {"protocol": PROTOCOL_VERSION, "kind": "deltas", "from": frm, "to": to, "changes": changes}


def _replica() -> Replica:
    offer = make_offer("a", "10001")
    return Replica(version=3, regions=("GB",), offers={"a": offer}, model=None)


def test_a_batch_is_applied_to_a_new_replica_and_the_old_one_is_untouched():
    old = _replica()
    new = apply_deltas(old, _batch(3, 5, [
        {"version": 4, "op": "offer_upsert", "offer": make_offer("b", "10002")},
        {"version": 5, "op": "offer_delete", "offer_id": "a"},
    ]))
    assert set(new.offers) == {"b"} and new.version == 5
    assert set(old.offers) == {"a"} and old.version == 3


def test_a_batch_that_does_not_start_at_the_replica_version_is_refused():
    with pytest.raises(ProtocolError, match="starts at 2"):
        apply_deltas(_replica(), _batch(2, 5, []))


def test_changes_out_of_order_or_beyond_the_batch_are_refused():
    upsert = {"op": "offer_upsert", "offer": make_offer("b", "10002")}
    with pytest.raises(ProtocolError, match="out of order"):
        apply_deltas(_replica(), _batch(3, 6, [{**upsert, "version": 5}, {**upsert, "version": 4}]))
    with pytest.raises(ProtocolError, match="out of order"):
        apply_deltas(_replica(), _batch(3, 4, [{**upsert, "version": 5}]))


def test_an_unknown_protocol_version_or_operation_is_refused():
    with pytest.raises(ProtocolError, match="protocol"):
        apply_deltas(_replica(), {**_batch(3, 3, []), "protocol": PROTOCOL_VERSION + 1})
    with pytest.raises(ProtocolError, match="unknown change op"):
        apply_deltas(_replica(), _batch(3, 4, [{"version": 4, "op": "drop_tables"}]))


def test_an_offer_moved_out_of_the_region_is_dropped():
    new = apply_deltas(_replica(), _batch(3, 4, [
        {"version": 4, "op": "offer_upsert", "offer": make_offer("a", "10001", region="DE")}]))
    assert new.offers == {}


def test_a_snapshot_keeps_only_the_edge_regions():
    snap = {"protocol": PROTOCOL_VERSION, "kind": "snapshot", "version": 9, "model": None,
            "offers": [make_offer("a", "1"), make_offer("b", "2", region="DE")]}
    replica = replica_from_snapshot(snap, ("DE",))
    assert set(replica.offers) == {"b"} and replica.version == 9
