"""Rate limits at the origin: admin calls per admin credential, sync calls per sync token, token guesses per peer
address; refusals are 429 with Retry-After and counted in the origin's /metrics."""

from __future__ import annotations

import re

from edgerec.cli.process import http_call, http_json
from edgerec.cli.services import admin_headers
from tests.conftest import Cluster


def _metric(origin_url: str, endpoint: str) -> float:
    status, headers, body = http_call(origin_url, "GET", "/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain")
    match = re.search(rf'^edgerec_origin_rate_limited_total\{{endpoint="{endpoint}"\}} (\S+)$', body.decode(), re.M)
    return float(match.group(1)) if match else 0.0


def test_admin_and_sync_calls_are_limited_per_credential(tmp_path, bundle_dir):
    cluster = Cluster(tmp_path, bundle_dir)
    cluster.origin.env.update(
        {
            "EDGEREC_ADMIN_RATE_LIMIT_RPS": "0.2",
            "EDGEREC_ADMIN_RATE_LIMIT_BURST": "3",
            "EDGEREC_SYNC_RATE_LIMIT_RPS": "0.2",
            "EDGEREC_SYNC_RATE_LIMIT_BURST": "2",
        }
    )
    cluster.start_origin()
    try:
        url, admin = cluster.origin.url, admin_headers(cluster.admin_token)
        assert [http_json(url, "GET", "/v1/admin/status", None, admin)[0] for _ in range(3)] == [200] * 3
        status, headers, body = http_call(url, "GET", "/v1/admin/models", headers=admin)
        assert status == 429 and int(headers["retry-after"]) >= 1
        assert b'"code":"rate_limited"' in body
        # Guesses without a valid token are limited by address, apart from the admin's own budget.
        wrong = {"Authorization": "Bearer not-the-admin-token-123"}
        assert [http_call(url, "GET", "/v1/admin/status", headers=wrong)[0] for _ in range(5)] == [401] * 3 + [429] * 2
        # Sync: per token; one region's edge over its rate does not stop another region's.
        gb = {"Authorization": f"Bearer {cluster.region_tokens['GB']}"}
        de = {"Authorization": f"Bearer {cluster.region_tokens['DE']}"}
        assert [http_call(url, "GET", "/v1/sync/snapshot?regions=GB", headers=gb)[0] for _ in range(3)] == [
            200,
            200,
            429,
        ]
        assert http_call(url, "GET", "/v1/sync/snapshot?regions=DE", headers=de)[0] == 200
        assert _metric(url, "admin") == 3
        assert _metric(url, "sync") == 1
        assert http_call(url, "GET", "/healthz")[0] == 200  # never limited
    finally:
        cluster.stop()
