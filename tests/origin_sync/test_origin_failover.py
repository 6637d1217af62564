"""An edge given several origins follows another when one dies, keeping its version; an origin whose chain does
not extend the edge's copy is refused and counted, and the edge keeps serving what it has."""

from __future__ import annotations

import secrets

from edgerec.cli.process import free_port, http_call
from edgerec.cli.services import edge_service, origin_service, publish_bundle, put_offer
from tests.conftest import make_offer, readyz, served, wait_until

ADMIN, SYNC = secrets.token_urlsafe(24), secrets.token_urlsafe(24)


def _start(*services):
    for service in services:
        service.start()
    for service in services:
        service.wait_ready("/healthz")
    return services


def _edge(tmp_path, origins, region="GB"):
    edge = edge_service(
        tmp_path,
        region,
        free_port(),
        ",".join(o.url for o in origins),
        SYNC,
        extra_env={"EDGEREC_SYNC_BACKOFF_MAX_S": "1", "EDGEREC_SYNC_WAIT_S": "2"},
    ).start()
    edge.wait_ready("/readyz")
    return edge


def _offer_ids(edge, sku: str) -> set[str]:
    answer = served(edge, {"region": "GB", "k": 50, "recent_items": [sku]})
    return {o["offer_id"] for o in answer["offers"]}


def test_the_edge_fails_over_to_the_second_origin_on_the_same_database_and_resumes_from_its_version(
    tmp_path, pg_schema, bundle_dir, catalog_skus
):
    first, second = (
        origin_service(tmp_path, free_port(), ADMIN, SYNC, dsn=pg_schema.dsn, name=f"origin {i}") for i in (1, 2)
    )
    _start(first, second)
    edge = None
    try:
        publish_bundle(first.url, ADMIN, bundle_dir, state="active")
        for sku in catalog_skus[:5]:
            put_offer(first.url, ADMIN, make_offer(f"GB-{sku}", sku))
        edge = _edge(tmp_path, [first, second])
        before = readyz(edge)
        assert before["origin"] == first.url and before["origin_failovers"] == 0
        first.kill()
        put_offer(second.url, ADMIN, make_offer("GB-after-failover", catalog_skus[6]))
        wait_until(
            lambda: "GB-after-failover" in _offer_ids(edge, catalog_skus[0]),
            timeout_s=30,
            what="the offer written through the second origin served",
        )
        after = readyz(edge)
        assert after["origin"] == second.url and after["origin_failovers"] >= 1
        assert after["synced_version"] > before["synced_version"]
        assert after["rejected_payloads"] == {}, after  # the same chain: nothing refused, no snapshot needed
        metrics = http_call(edge.url, "GET", "/metrics", timeout=5)[2].decode()
        assert any(
            line.startswith("edgerec_sync_failovers_total ") and float(line.split()[1]) >= 1
            for line in metrics.splitlines()
        ), "the failover is counted"
    finally:
        if edge is not None:
            edge.stop()
        first.stop()
        second.stop()


def test_an_origin_whose_chain_does_not_extend_the_copy_is_refused_and_counted(tmp_path, bundle_dir, catalog_skus):
    good = origin_service(tmp_path, free_port(), ADMIN, SYNC, name="origin good")
    # Same signing key, its own database: a history of its own that forks from the good one's.
    rogue_dir = tmp_path / "rogue"
    rogue = origin_service(
        tmp_path, free_port(), ADMIN, SYNC, name="origin rogue", extra_args=["--db", str(rogue_dir / "origin.db")]
    )
    _start(good, rogue)
    edge = None
    try:
        publish_bundle(good.url, ADMIN, bundle_dir, state="active")
        put_offer(good.url, ADMIN, make_offer(f"GB-{catalog_skus[0]}", catalog_skus[0]))
        # The rogue origin is further along (more versions), so it answers deltas the edge must check.
        publish_bundle(rogue.url, ADMIN, bundle_dir, state="active")
        for i, sku in enumerate(catalog_skus[:12]):
            put_offer(rogue.url, ADMIN, make_offer(f"GB-rogue-{i}", sku))
        edge = _edge(tmp_path, [good, rogue])
        # Ready can come before the first sync has landed on a loaded machine: the copy to keep is the good one's.
        wait_until(lambda: readyz(edge)["synced_version"] > 0, timeout_s=30, what="the good origin's copy synced")
        served_before = _offer_ids(edge, catalog_skus[0])
        version = readyz(edge)["synced_version"]
        good.kill()
        wait_until(
            lambda: readyz(edge)["rejected_payloads"].get("chain", 0) >= 1,
            timeout_s=30,
            what="the rogue origin's deltas refused on the hash chain",
        )
        state = readyz(edge)
        assert state["synced_version"] == version and state["origin_failovers"] >= 1
        assert _offer_ids(edge, catalog_skus[0]) == served_before  # still the good origin's offers
        assert not any(o.startswith("GB-rogue") for o in served_before)
    finally:
        if edge is not None:
            edge.stop()
        good.stop()
        rogue.stop()
