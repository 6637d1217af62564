"""Per-client rate limits at the edge: a client over its rate gets 429 with Retry-After while another client is
still served; the client is the trusted CDN's X-Forwarded-For address, never one claimed without the secret."""

from __future__ import annotations

import json
import re

import pytest

from edgerec.cli.process import http_call
from tests.conftest import make_offer

CDN_SECRET = "cdn-secret-for-ratelimit-tests"


def _get(edge, client_ip: str | None, secret: str | None = CDN_SECRET):
    headers = {}
    if client_ip is not None:
        headers["X-Forwarded-For"] = client_ip
    if secret is not None:
        headers["X-Edgerec-CDN-Secret"] = secret
    return http_call(edge.url, "GET", "/v1/recommendations?region=GB&k=3", headers=headers)


def _post(edge, path: str, document: dict, client_ip: str = "203.0.113.7"):
    """A JSON POST through the CDN (its shared secret) for the shopper at client_ip."""
    headers = {"Content-Type": "application/json", "X-Forwarded-For": client_ip, "X-Edgerec-CDN-Secret": CDN_SECRET}
    return http_call(edge.url, "POST", path, json.dumps(document).encode(), headers)


def _metric(edge, name: str, route: str) -> float:
    _, _, body = http_call(edge.url, "GET", "/metrics")
    match = re.search(rf'^{name}\{{route="{re.escape(route)}"\}} (\S+)$', body.decode(), re.M)
    return float(match.group(1)) if match else 0.0


@pytest.fixture
def limited_edge(cluster, catalog_skus):
    cluster.publish()
    for sku in catalog_skus[:10]:
        cluster.put_offer(make_offer(f"GB-{sku}", sku))
    return cluster.start_edge(
        "GB", env={"EDGEREC_CDN_SECRET": CDN_SECRET, "EDGEREC_RATE_LIMIT_RPS": "0.5", "EDGEREC_RATE_LIMIT_BURST": "4"}
    )


def test_a_client_over_its_rate_gets_429_while_another_client_is_served(limited_edge, catalog_skus):
    edge = limited_edge
    assert [_get(edge, "203.0.113.7")[0] for _ in range(4)] == [200] * 4
    status, headers, body = _get(edge, "203.0.113.7")
    assert status == 429
    assert int(headers["retry-after"]) >= 1
    assert headers["content-type"].startswith("application/json")
    error = json.loads(body)["error"]
    assert error["code"] == "rate_limited" and error["message"]
    # POST (personalized) and /v1/events draw on the same client's bucket.
    status, headers, body = _post(edge, "/v1/recommendations", {"recent_items": catalog_skus[:2], "region": "GB"})
    assert status == 429 and int(headers["retry-after"]) >= 1
    events = {"events": [{"type": "click", "request_id": "r1", "offer_ids": [f"GB-{catalog_skus[0]}"]}]}
    status, headers, body = _post(edge, "/v1/events", events)
    assert status == 429 and int(headers["retry-after"]) >= 1
    assert json.loads(body)["error"]["code"] == "rate_limited"
    # Another shopper behind the same CDN is served.
    assert _get(edge, "203.0.113.8")[0] == 200
    status, _, _ = _post(edge, "/v1/events", events, "203.0.113.9")
    assert status == 202
    # The refusals are counted by route; health and metrics are never limited.
    assert _metric(edge, "edgerec_rate_limited_total", "/v1/recommendations") == 2
    assert _metric(edge, "edgerec_rate_limited_total", "/v1/events") == 1
    assert http_call(edge.url, "GET", "/readyz")[0] == 200


def test_a_forwarded_address_without_the_cdn_secret_does_not_buy_a_new_bucket(limited_edge):
    edge = limited_edge
    # Without the secret X-Forwarded-For is ignored: every request is the connection's own address.
    statuses = [_get(edge, f"198.51.100.{i}", secret=None)[0] for i in range(6)]
    assert statuses[:4] == [200] * 4 and statuses[4:] == [429, 429]
    assert _get(edge, "198.51.100.1", secret="wrong-secret-abcdefgh")[0] == 429
    assert _get(edge, "198.51.100.1")[0] == 200  # with the secret it is a client of its own
