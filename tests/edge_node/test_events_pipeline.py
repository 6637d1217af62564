"""Feedback events end to end through real processes: impressions and posted events are spooled durably at the
edge, survive the origin's absence and an edge's SIGKILL, reach the origin exactly once, can be erased per
shopper, and feed the experiment report."""

from __future__ import annotations

import json
import sqlite3
import time

import pytest

from edgerec.cli.process import http_call, http_json
from edgerec.cli.services import Cluster
from origin_sync.wire.events import encode_batch, pseudonym_key, pseudonymize
from tests.cli_support import run_cli
from tests.conftest import seed
from tests.conftest import wait_until as wait_for


def stored(cluster, sql: str = "SELECT COUNT(*) FROM events", args: tuple = ()):
    path = cluster.workdir / "origin" / "events.db"
    if not path.exists():
        return 0
    with sqlite3.connect(path) as db:
        return db.execute(sql, args).fetchone()[0]


@pytest.fixture(scope="module")
def gb_edge(module_seeded):
    """One GB edge of a shared origin, for the refusals (they change nothing)."""
    return module_seeded.start_edge("GB")


def shop(edge, shoppers: range, catalog_skus) -> int:
    """Each shopper gets an answer, clicks its first offer, and every third buys it; returns events created."""
    created = 0
    for i in shoppers:
        status, answer = http_json(
            edge.url,
            "POST",
            "/v1/recommendations",
            {"shopper_id": f"shopper-{i}", "recent_items": catalog_skus[:2], "k": 3},
        )
        assert status == 200, answer
        offer = answer["offers"][0]["offer_id"]
        events = [
            {"type": "click", "request_id": answer["request_id"], "offer_ids": [offer], "shopper_id": f"shopper-{i}"}
        ]
        if i % 3 == 0:
            events.append(
                {
                    "type": "purchase",
                    "request_id": answer["request_id"],
                    "offer_ids": [offer],
                    "value": 9.99,
                    "currency": "GBP",
                    "shopper_id": f"shopper-{i}",
                }
            )
        status, body = http_json(edge.url, "POST", "/v1/events", {"events": events})
        assert status == 202 and body == {"accepted": len(events)}, body
        created += 1 + len(events)
    return created


@pytest.mark.parametrize(
    "body, status, code",
    [
        (b"", 400, "empty_body"),
        (b"{", 400, "invalid_json"),
        (json.dumps({"events": []}).encode(), 422, "invalid_request"),
        (
            json.dumps({"events": [{"type": "view", "request_id": "r", "offer_ids": ["a"]}]}).encode(),
            422,
            "invalid_request",
        ),
        (
            json.dumps({"events": [{"type": "purchase", "request_id": "r", "offer_ids": ["a"]}]}).encode(),
            422,
            "invalid_request",
        ),
        (
            json.dumps({"events": [{"type": "click", "request_id": "r", "offer_ids": ["a"], "value": 3}]}).encode(),
            422,
            "invalid_request",
        ),
        (
            json.dumps(
                {"events": [{"type": "click", "request_id": "r", "offer_ids": ["a"], "ip": "1.2.3.4"}]}
            ).encode(),
            422,
            "invalid_request",
        ),
        (
            json.dumps({"events": [{"type": "click", "request_id": "r", "offer_ids": ["a"], "region": "DE"}]}).encode(),
            404,
            "unknown_region",
        ),
    ],
)
def test_bad_events_get_a_4xx_json_error(gb_edge, body, status, code):
    edge = gb_edge
    got, headers, raw = http_call(edge.url, "POST", "/v1/events", body, {"Content-Type": "application/json"})
    assert got == status and json.loads(raw)["error"]["code"] == code, raw
    got, _, raw = http_call(edge.url, "POST", "/v1/events", b"x" * 70_000, {"Content-Type": "application/json"})
    assert got == 413


def test_events_survive_the_origin_down_and_an_edge_sigkill_and_arrive_exactly_once(seeded, catalog_skus):
    cluster = seeded
    edge = cluster.start_edge("GB")
    expected = shop(edge, range(0, 30), catalog_skus)
    wait_for(lambda: stored(cluster) == expected, what="the first events at the origin")

    cluster.origin.stop()
    expected += shop(edge, range(30, 60), catalog_skus)
    time.sleep(0.3)  # past the 5 ms write window: everything accepted is in its segment file
    edge.kill()  # SIGKILL
    edge = cluster.start_edge("GB", port=edge.port)  # serves from its copy on disk, origin still down
    expected += shop(edge, range(60, 70), catalog_skus)
    time.sleep(1.5)
    assert stored(cluster) == 30 * 2 + 10  # nothing more arrived while the origin was away

    cluster.start_origin()
    wait_for(lambda: stored(cluster) >= expected, what="the spooled events after the outage")
    time.sleep(1.0)
    assert stored(cluster) == expected
    assert stored(cluster, "SELECT COUNT(DISTINCT id) FROM events") == expected  # no event counted twice
    assert stored(cluster, "SELECT COUNT(*) FROM events WHERE kind = 'impression'") == 70
    # No shopper id, IP address or user agent is stored: only the keyed pseudonym.
    key = pseudonym_key(cluster.pseudonym_key)
    assert stored(cluster, "SELECT COUNT(*) FROM events WHERE shopper = ?", (pseudonymize(key, "shopper-3"),)) == 3
    assert stored(cluster, "SELECT COUNT(*) FROM events WHERE shopper LIKE 'shopper-%'") == 0
    wait_for(
        lambda: not list((cluster.workdir / "edge-GB" / "events").rglob("*.seg")), what="acknowledged segments deleted"
    )
    status, _, metrics = http_call(edge.url, "GET", "/metrics")
    assert b'edgerec_events_dropped_total{reason="spool_full"} 0.0' in metrics


def test_with_events_off_the_edge_records_nothing_and_says_so(seeded, catalog_skus):
    edge = seeded.start_edge("GB", env={"EDGEREC_EVENTS": "off"})
    status, answer = http_json(
        edge.url, "POST", "/v1/recommendations", {"shopper_id": "shopper-1", "recent_items": catalog_skus[:2], "k": 3}
    )
    assert status == 200 and answer["offers"], answer
    status, body = http_json(
        edge.url,
        "POST",
        "/v1/events",
        {
            "events": [
                {"type": "click", "request_id": answer["request_id"], "offer_ids": [answer["offers"][0]["offer_id"]]}
            ]
        },
    )
    assert status == 404 and body["error"]["code"] == "events_disabled", body
    _, _, spec = http_call(edge.url, "GET", "/openapi.json")
    assert "/v1/events" not in json.loads(spec)["paths"]
    assert not (seeded.workdir / "edge-GB" / "events").exists()  # no spool at all
    time.sleep(1.5)  # a segment would have been shipped by now
    assert stored(seeded) == 0
    _, _, metrics = http_call(edge.url, "GET", "/metrics")
    assert b"edgerec_events_recorded_total" not in metrics


def test_an_unknown_events_setting_is_refused_at_start(seeded):
    edge = seeded.start_edge("GB", env={"EDGEREC_EVENTS": "sometimes"}, ready=False)
    assert edge.process.wait(timeout=30) != 0
    log = edge.log_tail()
    assert "EDGEREC_EVENTS" in log and "Traceback" not in log


def test_a_retried_batch_is_acknowledged_without_a_duplicate_and_a_token_sends_only_its_region(seeded):
    cluster = seeded
    event = {
        "id": "e1",
        "kind": "click",
        "ts": time.time(),
        "region": "GB",
        "request_id": "r1",
        "shopper": None,
        "experiment": None,
        "variant": None,
        "offer_ids": ["GB-1"],
        "value": None,
        "currency": None,
        "model_version": None,
        "data_version": None,
        "slot": None,
    }
    body = encode_batch("batch-1", ["GB"], [event])
    headers = {"Authorization": f"Bearer {cluster.region_tokens['GB']}", "Content-Type": "application/x-msgpack"}
    answers = [json.loads(http_call(cluster.origin.url, "POST", "/v1/sync/events", body, headers)[2]) for _ in range(3)]
    assert [a["duplicate"] for a in answers] == [False, True, True]
    assert stored(cluster) == 1
    de_headers = {**headers, "Authorization": f"Bearer {cluster.region_tokens['DE']}"}
    status, _, raw = http_call(cluster.origin.url, "POST", "/v1/sync/events", body, de_headers)
    assert status == 403 and b"forbidden_region" in raw
    status, _, raw = http_call(cluster.origin.url, "POST", "/v1/sync/events", b"\x93garbage", headers)
    assert status == 422
    forged = encode_batch("batch-2", ["GB"], [{**event, "region": "DE"}])
    status, _, raw = http_call(cluster.origin.url, "POST", "/v1/sync/events", forged, headers)
    assert status == 422 and b"region" in raw


def test_erasure_removes_one_shoppers_events_and_the_report_reads_the_rest(seeded, catalog_skus, tmp_path):
    cluster = seeded
    edge = cluster.start_edge("GB")
    status, saved = http_json(
        cluster.origin.url,
        "PUT",
        "/v1/admin/experiments/e1",
        {"id": "e1", "variants": [{"name": "control"}, {"name": "treatment", "max_per_group": 1}]},
        {"Authorization": f"Bearer {cluster.admin_token}"},
    )
    assert status == 200
    probes = 1
    while (
        http_json(edge.url, "POST", "/v1/recommendations", {"shopper_id": "x"})[1]["data_version"]
        < saved["data_version"]
    ):
        probes += 1
        time.sleep(0.02)
    expected = shop(edge, range(100), catalog_skus) + probes
    wait_for(lambda: stored(cluster) == expected, what="the events at the origin")
    origin, token = ("--origin", cluster.origin.url), cluster.admin_token
    pseudonym_env = {"EDGEREC_PSEUDONYM_KEY": cluster.pseudonym_key}
    pseudonym = pseudonymize(pseudonym_key(cluster.pseudonym_key), "shopper-6")
    assert stored(cluster, "SELECT COUNT(*) FROM events WHERE shopper = ?", (pseudonym,)) == 3
    # The CLI hashes the shopper id itself, with the edges' pseudonym key.
    erase = run_cli(
        "events", "erase", "--shopper", "shopper-6", *origin, admin_token=token, env=pseudonym_env, timeout=60
    )
    assert erase.returncode == 0 and "erased 3 events" in erase.stdout, erase.stderr
    assert stored(cluster, "SELECT COUNT(*) FROM events WHERE shopper = ?", (pseudonym,)) == 0
    assert stored(cluster) == expected - 3

    plot = tmp_path / "e1.png"
    report = run_cli(
        "experiments", "report", "e1", "--json", "--plot", str(plot), *origin, admin_token=token, timeout=120
    )
    assert report.returncode == 0, report.stderr
    result = json.loads(report.stdout)
    variants = result["variants"]
    assert sum(v["impressions"] for v in variants.values()) == 99 + 1  # shopper-6's was erased; x's probe
    assert sum(v["clicks"] for v in variants.values()) == 99  # every shopper clicked (not the probe)
    assert result["sample_ratio"]["p_value"] is not None and plot.stat().st_size > 1000
    text = run_cli("experiments", "report", "e1", *origin, admin_token=token, timeout=120)
    assert "sample ratio" in text.stdout and "winner" in text.stdout, text.stderr


def test_events_reach_a_postgresql_origin_exactly_once_across_its_restart_and_feed_the_report(
    tmp_path, bundle_dir, catalog_skus, pg_schema
):
    import asyncio

    import asyncpg

    async def count(sql: str, *args):
        conn = await asyncpg.connect(pg_schema.dsn.split("?")[0], server_settings={"search_path": pg_schema.name})
        try:
            return await conn.fetchval(sql, *args)
        finally:
            await conn.close()

    def in_pg(sql: str = "SELECT COUNT(*) FROM events", *args):
        try:
            return asyncio.run(count(sql, *args))
        except asyncpg.UndefinedTableError:
            return 0

    cluster = Cluster(tmp_path, bundle_dir, dsn=pg_schema.dsn)
    cluster.start_origin()
    try:
        seed(cluster, catalog_skus)
        status, saved = http_json(
            cluster.origin.url,
            "PUT",
            "/v1/admin/experiments/pg",
            {"id": "pg", "variants": [{"name": "control"}, {"name": "treatment"}]},
            {"Authorization": f"Bearer {cluster.admin_token}"},
        )
        assert status == 200
        edge = cluster.start_edge("GB")
        wait_for(
            lambda: http_json(edge.url, "POST", "/v1/recommendations", {})[1]["data_version"] >= saved["data_version"],
            what="the experiment at the edge",
        )
        expected = shop(edge, range(0, 20), catalog_skus) + 1  # and the probe's impression
        wait_for(lambda: in_pg() == expected, what="the events in PostgreSQL")
        cluster.origin.stop()  # the spool keeps what arrives meanwhile
        expected += shop(edge, range(20, 40), catalog_skus)
        time.sleep(1.5)
        cluster.start_origin()
        wait_for(lambda: in_pg() == expected, what="the events spooled while the origin was down")
        time.sleep(1.0)
        assert in_pg() == expected == in_pg("SELECT COUNT(DISTINCT id) FROM events")  # nothing twice
        status, report = http_json(
            cluster.origin.url,
            "GET",
            "/v1/admin/experiments/pg/report",
            headers={"Authorization": f"Bearer {cluster.admin_token}"},
        )
        assert status == 200, report
        assert sum(v["impressions"] for v in report["variants"].values()) == 40  # the 40 shoppers enrolled
        assert sum(v["clicks"] for v in report["variants"].values()) == 40
    finally:
        cluster.stop()
