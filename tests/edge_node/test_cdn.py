"""The edge behind a CDN: geo headers trusted only with the shared secret, cache headers, ETags, and a real
Varnish in front (anonymous answers cached, personalized ones never, purge by surrogate key)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from edgerec.cli.process import free_port, http_call
from tests.conftest import make_offer

SECRET = "cdn-shared-secret-for-tests-0001"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def two_region_edge(module_cluster, catalog_skus):
    cluster = module_cluster
    cluster.publish()
    for sku in catalog_skus[:20]:
        cluster.put_offer(make_offer(f"GB-{sku}", sku))
        cluster.put_offer(make_offer(f"DE-{sku}", sku, region="DE", currency="EUR"))
    edge = cluster.start_edge("GB,DE", args=["--markets", "GB:GB,IE"], env={"EDGEREC_CDN_SECRET": SECRET})
    return cluster, edge


def _get(edge, path, headers=None):
    status, hdrs, raw = http_call(edge.url, "GET", path, headers=headers or {})
    return status, hdrs, (json.loads(raw) if raw else None)


def test_the_geo_header_decides_the_region_only_with_the_cdn_secret(two_region_edge):
    _, edge = two_region_edge
    status, _, body = _get(
        edge, "/v1/recommendations", {"CloudFront-Viewer-Country": "DE", "X-Edgerec-CDN-Secret": SECRET}
    )
    assert status == 200 and body["region"] == "DE"
    # A viewer country mapped to a market: Ireland is served by the GB market.
    status, _, body = _get(edge, "/v1/recommendations", {"CF-IPCountry": "IE", "X-Edgerec-CDN-Secret": SECRET})
    assert status == 200 and body["region"] == "GB"
    # Without the secret the header is ignored: this two-region edge cannot tell the region.
    for headers in (
        {"CloudFront-Viewer-Country": "DE"},
        {"CloudFront-Viewer-Country": "DE", "X-Edgerec-CDN-Secret": "guessed"},
    ):
        status, _, body = _get(edge, "/v1/recommendations", headers)
        assert status == 422 and body["error"]["code"] == "region_required"
    # An explicit region wins over the header.
    status, _, body = _get(
        edge, "/v1/recommendations?region=GB", {"CloudFront-Viewer-Country": "DE", "X-Edgerec-CDN-Secret": SECRET}
    )
    assert body["region"] == "GB"


def test_cdn_headers_without_the_secret_can_be_refused(cluster, catalog_skus):
    cluster.publish()
    cluster.put_offer(make_offer(f"GB-{catalog_skus[0]}", catalog_skus[0]))
    edge = cluster.start_edge("GB", args=["--untrusted-cdn-headers", "refuse"], env={"EDGEREC_CDN_SECRET": SECRET})
    status, _, body = _get(edge, "/v1/recommendations", {"CloudFront-Viewer-Country": "GB"})
    assert status == 403 and body["error"]["code"] == "untrusted_cdn_headers"
    assert (
        _get(edge, "/v1/recommendations", {"CloudFront-Viewer-Country": "GB", "X-Edgerec-CDN-Secret": SECRET})[0] == 200
    )


def test_anonymous_answers_are_publicly_cacheable_with_keys_etag_and_304(two_region_edge):
    _, edge = two_region_edge
    status, headers, body = _get(edge, "/v1/recommendations?region=GB&k=5&slot=home")
    assert status == 200 and len(body["offers"]) == 5
    cache_control = headers["cache-control"]
    assert "public" in cache_control and "s-maxage=" in cache_control and "stale-while-revalidate=" in cache_control
    keys = headers["surrogate-key"].split()
    assert "region:GB" in keys and f"data:{body['data_version']}" in keys
    assert {f"offer:{o['offer_id']}" for o in body["offers"]} <= set(keys)
    assert headers["cache-tag"] == ",".join(keys)
    assert "vary" not in headers  # the region is in the URL, so nothing else changes the answer
    status, again, _ = _get(edge, "/v1/recommendations?region=GB&k=5&slot=home", {"If-None-Match": headers["etag"]})
    assert status == 304 and again["etag"] == headers["etag"]
    assert "cache;desc=hit" in again["server-timing"]
    _, geo, _ = _get(
        edge, "/v1/recommendations?k=5", {"CloudFront-Viewer-Country": "DE", "X-Edgerec-CDN-Secret": SECRET}
    )
    assert geo["vary"] == "cloudfront-viewer-country, cf-ipcountry"


def test_personalized_answers_are_private_and_timed_by_stage(two_region_edge, catalog_skus):
    _, edge = two_region_edge
    status, headers, raw = http_call(
        edge.url,
        "POST",
        "/v1/recommendations",
        json.dumps({"region": "GB", "recent_items": catalog_skus[:3]}).encode(),
        {"Content-Type": "application/json"},
    )
    assert status == 200
    assert headers["cache-control"] == "private, no-store" and "etag" not in headers
    assert all(f"{stage};dur=" in headers["server-timing"] for stage in ("parse", "model", "total"))
    assert headers["x-request-id"] == json.loads(raw)["request_id"]


def test_anonymous_query_errors_are_4xx_json(two_region_edge):
    _, edge = two_region_edge
    for query, status in (
        ("?region=GB&k=0", 422),
        ("?region=GB&k=abc", 422),
        ("?region=GB&k=1&k=2", 422),
        ("?region=ZZ", 404),
        ("?region=GB&color=red", 422),
        ("?region=GB&slot=Bad%20Slot", 422),
    ):
        got, headers, body = _get(edge, f"/v1/recommendations{query}")
        assert got == status, (query, body)
        assert body["error"]["message"] and headers["cache-control"] == "private, no-store"


# -- behind a real Varnish -----------------------------------------------------------------------


def _varnish_available() -> bool:
    if shutil.which("varnishd"):
        return True
    if os.environ.get("EDGEREC_INFRA_STRICT") == "1":
        pytest.fail("varnishd is not installed (apt-get install --no-install-recommends varnish)")
    pytest.skip("varnishd is not installed (apt-get install --no-install-recommends varnish)")


@pytest.fixture
def varnish(two_region_edge, tmp_path):
    # Uses the shared edge, so it runs last in this module: it changes an offer.
    _varnish_available()
    _, edge = two_region_edge
    vcl = (REPO / "infra" / "varnish" / "edgerec.vcl").read_text()
    vcl = vcl.replace("${EDGE_HOST}", "127.0.0.1").replace("${EDGE_PORT}", str(edge.port))
    vcl = vcl.replace("${CDN_SECRET}", SECRET)
    (tmp_path / "edgerec.vcl").write_text(vcl)
    port = free_port()
    proc = subprocess.Popen(
        [
            "varnishd",
            "-F",
            "-a",
            f"127.0.0.1:{port}",
            "-T",
            f"127.0.0.1:{free_port()}",
            "-f",
            str(tmp_path / "edgerec.vcl"),
            "-s",
            "malloc,32m",
            "-n",
            str(tmp_path / "varnish"),
            "-j",
            "none",
        ],
        stdout=open(tmp_path / "varnish.log", "wb"),
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            http_call(url, "GET", "/healthz", timeout=1)
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((tmp_path / "varnish.log").read_text())
            time.sleep(0.1)
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def test_behind_varnish_anonymous_answers_hit_personalized_never_and_a_purge_takes_effect(
    varnish, two_region_edge, catalog_skus
):
    cluster, edge = two_region_edge
    geo = {"CloudFront-Viewer-Country": "GB"}
    first = http_call(varnish, "GET", "/v1/recommendations?k=5", headers=geo)
    second = http_call(varnish, "GET", "/v1/recommendations?k=5", headers=geo)
    assert first[0] == second[0] == 200
    assert first[1]["x-cache"] == "miss" and second[1]["x-cache"] == "hit"
    assert first[2] == second[2]
    # Another country is another answer (Vary on the geo header), not the GB one.
    de = http_call(varnish, "GET", "/v1/recommendations?k=5", headers={"CloudFront-Viewer-Country": "DE"})
    assert de[1]["x-cache"] == "miss" and json.loads(de[2])["region"] == "DE"

    body = json.dumps({"region": "GB", "recent_items": catalog_skus[:3]}).encode()
    for _ in range(2):
        status, headers, _ = http_call(
            varnish, "POST", "/v1/recommendations", body, {"Content-Type": "application/json"}
        )
        assert status == 200 and headers["x-cache"] == "miss"

    top = json.loads(second[2])["offers"][0]
    changed = cluster.put_offer(make_offer(top["offer_id"], top["sku"], price=0.99, title="Purged price"))
    deadline = time.monotonic() + 10
    while _get(edge, "/v1/recommendations?k=5&region=GB")[2]["data_version"] < changed["data_version"]:
        assert time.monotonic() < deadline, "the edge did not apply the change"
        time.sleep(0.02)
    stale = http_call(varnish, "GET", "/v1/recommendations?k=5", headers=geo)
    assert stale[1]["x-cache"] == "hit" and json.loads(stale[2])["offers"][0]["price"] != 0.99
    status, _, _ = http_call(varnish, "PURGE", "/", headers={"Surrogate-Key": f"offer:{top['offer_id']}"})
    assert status == 200
    fresh = http_call(varnish, "GET", "/v1/recommendations?k=5", headers=geo)
    assert fresh[1]["x-cache"] == "miss"
    served = {o["offer_id"]: o for o in json.loads(fresh[2])["offers"]}
    assert served[top["offer_id"]]["price"] == 0.99 and served[top["offer_id"]]["title"] == "Purged price"
