"""The signed state digest: the origin keeps each region's LtHash current in every write; an edge proves its whole
copy against it after every batch, at every load from disk, and on every long-poll answer."""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3

import msgpack
import numpy as np
import pytest

from edgerec.cli.process import http_call
from origin_sync.origin.store import PostgresStore, SQLiteStore
from origin_sync.replica import LocalCopy, apply_deltas, replica_from_snapshot
from origin_sync.wire import digest
from origin_sync.wire.protocol import IntegrityError, canonical, pack, unpack
from origin_sync.wire.signing import open_envelope, seal
from tests.conftest import make_offer, readyz, served, wait_until
from tests.origin_sync.test_replica import (
    SIGNER,
    VERIFIER,
    _batch,
    _replica,
    _upsert,
    signed_at,
    with_digest,
)


def test_the_lattice_hash_is_a_set_hash_that_composes():
    a, b, c = (canonical(["offer", "GB", {"id": x}]) for x in "abc")
    # Order does not matter, adding and removing are inverse, and the sum of parts is the hash of the whole.
    assert digest.checksum(digest.sum_of([a, b, c])) == digest.checksum(digest.sum_of([c, a, b]))
    vector = digest.sum_of([a, b])
    vector -= digest.vector_of(b)
    assert np.array_equal(vector, digest.vector_of(a))
    assert digest.checksum(digest.sum_of([a])) != digest.checksum(digest.sum_of([b]))
    # An offer of two regions counts once in each: an edge of both expects both regions' sums.
    offer = make_offer("x", "1", region="GB") | {"regions": ["DE", "GB"]}
    per_region = {r: digest.sum_of([e for s, e in digest.offer_elements(offer) if s == r]) for r in ("DE", "GB")}
    both = digest.state_vector([offer], None, [], ("DE", "GB"))
    assert np.array_equal(digest.combined(per_region, ("DE", "GB")), both)


def test_a_batch_whose_result_does_not_match_the_signed_digest_is_refused():
    replica = _replica()
    batch = _batch(replica, [_upsert(4, "b")])
    good = apply_deltas(replica, batch)
    assert apply_deltas(replica, signed_at(batch, good)).state_digest == good.state_digest
    with pytest.raises(IntegrityError) as refused:
        apply_deltas(replica, {**batch, "state_digest": hashlib.sha256(b"another state").digest()})
    assert refused.value.reason == "digest"
    # The incremental vector after the batch is the one computed from scratch.
    assert np.array_equal(good.lanes, digest.state_vector(good.offers.values(), None, [], ("GB",)))


def _tamper(path, offer_id: str, **changes) -> None:
    """What the probe did: unpack the replica file, change an offer, re-pack with a freshly computed sha256."""
    outer = unpack(path.read_bytes())
    record = unpack(outer["body"])
    for offer in record["offers"]:
        if offer["id"] == offer_id:
            offer.update(changes)
    body = canonical(record)
    path.write_bytes(pack({"sha256": hashlib.sha256(body).digest(), "body": body}))


def test_a_copy_edited_on_disk_with_its_checksum_recomputed_is_refused_at_load(tmp_path):
    snapshot = seal(
        "snapshot",
        with_digest(
            {
                "regions": ["GB"],
                "version": 7,
                "head_hash": bytes(32),
                "model": None,
                "offers": [make_offer("a", "10001")],
            }
        ),
        SIGNER,
    )
    replica = replica_from_snapshot(open_envelope(snapshot, "snapshot", VERIFIER), ("GB",))
    batch = _batch(replica, [_upsert(8, "b")])
    newer = apply_deltas(replica, batch)
    local = LocalCopy(tmp_path)
    local.save(newer, "deltas", seal("deltas", signed_at(batch, newer), SIGNER), None, 8)
    assert local.load(VERIFIER, ("GB",))[0].state_digest == newer.state_digest
    _tamper(local.replica_path, "b", price=0.01, title="tampered")
    with pytest.raises(IntegrityError) as refused:
        local.load(VERIFIER, ("GB",))
    assert refused.value.reason == "digest"
    # A copy whose last batch carried no digest (a page short of the head) cannot be proven either.
    local.save(newer, "deltas", seal("deltas", batch, SIGNER), None, 8)
    with pytest.raises(IntegrityError, match="no signed state digest"):
        local.load(VERIFIER, ("GB",))


def _writes_then_digest(store) -> None:
    async def run() -> None:
        await store.open()
        try:
            await store.upsert_offer(make_offer("a", "1") | {"regions": ["DE", "GB"]})
            await store.upsert_offer(make_offer("b", "2"))
            await store.upsert_offer(make_offer("b", "2", region="DE") | {"price": 3.5})  # moves out of GB
            await store.upsert_offer(make_offer("c", "3"))
            await store.delete_offer("c")
            for regions in (("GB",), ("DE",), ("DE", "GB"), ("FR",)):
                page = await store.changes_since(0, regions)
                snap = await store.snapshot(regions)
                expected = digest.state_digest(snap["offers"], snap["model"], snap["experiments"], regions)
                assert page.state_digest == expected, regions
        finally:
            await store.close()

    asyncio.run(run())


def test_the_sqlite_store_keeps_every_region_digest_current_and_rebuilds_a_missing_one(tmp_path):
    _writes_then_digest(SQLiteStore(tmp_path / "origin.db", tmp_path / "blobs"))
    # A database from before the digests: the rows are rebuilt from the whole state at start.
    db = sqlite3.connect(tmp_path / "origin.db")
    db.execute("DELETE FROM state_digests")
    db.execute("DELETE FROM meta WHERE key = 'state_digests_at'")
    db.commit()
    db.close()
    _writes_then_digest(SQLiteStore(tmp_path / "origin.db", tmp_path / "blobs"))


def test_the_postgres_store_keeps_every_region_digest_current(pg_schema, tmp_path):
    _writes_then_digest(PostgresStore(pg_schema.dsn, tmp_path / "blobs", schema=pg_schema.name))


def test_a_tampered_replica_is_refused_at_start_and_the_edge_takes_the_signed_state(seeded, catalog_skus):
    offer_id = f"GB-{catalog_skus[0]}"
    edge = seeded.start_edge("GB")
    last = seeded.put_offer(make_offer(offer_id, catalog_skus[0], price=5.0))["data_version"]
    wait_until(lambda: readyz(edge)["persisted_version"] == last, what="the copy on disk (from a delta)")
    edge.stop()
    _tamper(seeded.workdir / "edge-GB" / "replica.msgpack", offer_id, price=0.01, title="tampered")

    seeded.origin.kill()
    restarted = seeded.start_edge("GB", port=edge.port, ready=False)
    restarted.wait_ready("/healthz")
    wait_until(lambda: readyz(restarted)["rejected_payloads"].get("digest") == 1, what="the copy refused")
    state = readyz(restarted)
    assert not state["ready"] and not state["loaded_from_disk"] and state["data_version"] is None

    seeded.origin.start()
    restarted.wait_ready("/readyz", timeout_s=30)
    answer = served(restarted, {"recent_items": catalog_skus[:5], "k": 30})
    offer = next(o for o in answer["offers"] if o["offer_id"] == offer_id)
    assert offer["price"] == 5.0 and offer["title"] != "tampered" and answer["data_version"] == last
    metrics = http_call(restarted.url, "GET", "/metrics")[2].decode()
    assert 'edgerec_sync_rejected_total{reason="digest"} 1.0' in metrics


def test_a_digest_mismatch_on_the_wire_makes_the_edge_take_a_fresh_snapshot(seeded, catalog_skus):
    edge = seeded.start_edge("GB")
    snapshots_before = _snapshots(edge)
    # The origin's GB vector goes wrong behind its back: the next delta batch it signs carries a digest that the
    # edge's state does not have. The edge refuses the batch and takes a snapshot, whose digest is computed from
    # the content it carries, so it is proven again.
    db = sqlite3.connect(seeded.workdir / "origin" / "origin.db")
    db.execute("UPDATE state_digests SET lanes = ? WHERE scope = 'GB'", (bytes(2 * digest.LANES),))
    db.commit()
    db.close()
    last = seeded.put_offer(make_offer(f"GB-{catalog_skus[1]}", catalog_skus[1], price=7.0))["data_version"]
    wait_until(lambda: readyz(edge)["rejected_payloads"].get("digest", 0) >= 1, what="the batch refused")
    wait_until(
        lambda: _snapshots(edge) > snapshots_before and readyz(edge)["data_version"] == last,
        what="a fresh snapshot at the new version",
    )
    answer = served(edge, {"recent_items": catalog_skus[:5], "k": 30})
    assert next(o["price"] for o in answer["offers"] if o["offer_id"] == f"GB-{catalog_skus[1]}") == 7.0
    log = (seeded.workdir / "logs" / "edge-GB.log").read_text()
    assert "does not match the state digest the origin signed" in log


def _snapshots(edge) -> float:
    metrics = http_call(edge.url, "GET", "/metrics")[2].decode()
    line = next(x for x in metrics.splitlines() if x.startswith("edgerec_sync_snapshots_total"))
    return float(line.split()[-1])


def test_msgpack_round_trip_keeps_the_element_bytes():
    # The edge hashes offers as msgpack decoded them; the origin as it validated them: the bytes must agree.
    offer = make_offer("a", "1") | {"active_from": 1.5e9, "boost": 0.0}
    assert canonical(["offer", "GB", msgpack.unpackb(pack(offer))]) == canonical(["offer", "GB", offer])


def test_a_damaged_model_file_on_disk_is_counted_and_logged_with_its_reason(seeded, catalog_skus):
    edge = seeded.start_edge("GB")
    last = seeded.put_offer(make_offer(f"GB-{catalog_skus[0]}", catalog_skus[0], price=5.0))["data_version"]
    wait_until(lambda: readyz(edge)["persisted_version"] == last, what="the copy on disk")
    edge.stop()
    blobs = list((seeded.workdir / "edge-GB" / "blobs").iterdir())
    assert blobs
    for blob in blobs:
        blob.write_bytes(b"not the model")
    seeded.origin.kill()
    restarted = seeded.start_edge("GB", port=edge.port, ready=False)
    restarted.wait_ready("/healthz")
    wait_until(lambda: readyz(restarted)["rejected_payloads"].get("blob") == 1, what="the damaged model counted")
    log = (seeded.workdir / "logs" / "edge-GB.log").read_text()
    line = next(x for x in log.splitlines() if "could not serve the persisted replica" in x)
    assert "damaged on disk" in line and "origin is not reached yet" in line
    seeded.origin.start()
    restarted.wait_ready("/readyz", timeout_s=30)
    assert readyz(restarted)["data_version"] == last
