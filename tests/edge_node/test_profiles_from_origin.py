"""The whole loop of a profile on real processes: a purchase taken by one replica of a region reaches the other
replica through the origin's summary (shipped event -> folded at the origin -> signed profile delta -> ProfileSync
into the edge's store), and `edgerec events erase` turns both replicas back to the anonymous answer and leaves no
trace of the shopper's pseudonym in either store's files once the erasure has compacted them."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgerec.cli.process import http_json
from origin_sync.wire.events import pseudonym_key, pseudonymize
from tests.cli_support import run_cli
from tests.conftest import served, wait_until

SEEDED_OFFERS = {"gb": 40}


def answer_for(edge, shopper: str) -> dict:
    return served(edge, {"shopper_id": shopper, "region": "GB", "k": 10})


def store_files(edge) -> list[Path]:
    data_dir = Path(edge.args[edge.args.index("--data-dir") + 1])
    return [p for p in (data_dir / "profiles").rglob("*") if p.is_file()]


def pseudonym_key_of(cluster, shopper: str) -> str:
    return pseudonymize(pseudonym_key(cluster.pseudonym_key), shopper)


@pytest.fixture
def replicas(seeded):
    # Embedded stores (one per replica): only the origin's summary can carry a profile from one to the other.
    return seeded.start_edges(seeded.edge("GB", label="edge-GB-a"), seeded.edge("GB", label="edge-GB-b"))


def test_a_purchase_on_one_replica_reaches_the_other_through_the_origin_and_erasure_removes_it(seeded, replicas):
    first, second = replicas
    shopper = "loop-shopper-1"
    before = answer_for(first, shopper)
    assert before["profile"] == "miss" and answer_for(second, shopper)["profile"] == "miss"
    bought = before["offers"][0]["offer_id"]
    event = {"type": "purchase", "request_id": before["request_id"], "offer_ids": [bought], "shopper_id": shopper}
    event.update(region="GB", value=9.99, currency="GBP")
    status, body = http_json(first.url, "POST", "/v1/events", {"events": [event]}, timeout=5)
    assert status == 202, body
    assert answer_for(first, shopper)["profile"] == "hit"  # read-your-writes on the replica that took it

    # The other replica learns it only from the origin: shipped, folded into the summary, synced as a delta.
    wait_until(lambda: answer_for(second, shopper)["profile"] == "hit", timeout_s=60, what="the summary at replica b")
    on_second = answer_for(second, shopper)
    assert bought not in [o["offer_id"] for o in on_second["offers"]]  # just bought, by the origin's summary

    pseudonym = pseudonym_key_of(seeded, shopper)
    held = [path for path in store_files(first) if pseudonym.encode() in path.read_bytes()]
    assert held  # the check below can fail: the store's files do hold the pseudonym before the erasure

    env = {"EDGEREC_PSEUDONYM_KEY": seeded.pseudonym_key, "EDGEREC_ORIGIN_URL": seeded.origin.url}
    erased = run_cli("events", "erase", "--shopper", shopper, admin_token=seeded.admin_token, env=env)
    assert erased.returncode == 0, erased.stderr
    for edge in (first, second):
        wait_until(lambda edge=edge: answer_for(edge, shopper)["profile"] == "miss", timeout_s=60, what="erasure")
    for edge in (first, second):
        # The erasure's compaction runs in the background: wait for the files to lose the pseudonym's bytes.
        def clean(edge=edge) -> bool:
            return all(pseudonym.encode() not in path.read_bytes() for path in store_files(edge))

        wait_until(clean, timeout_s=30, what="the store files without the pseudonym")
        assert store_files(edge)
