"""Security checks on the code and on what the services write: bandit finds nothing of high severity, and no
token, key or shopper id reaches a log."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import Cluster, make_offer

REPO = Path(__file__).resolve().parents[2]


def test_bandit_finds_no_high_severity_issue_in_the_code():
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "bandit",
            "-q",
            "-r",
            "edge_node",
            "origin_sync",
            "models",
            "edgerec",
            "benchmarks",
            "--severity-level",
            "high",
            "-f",
            "json",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    report = json.loads(result.stdout)
    assert report["results"] == [], [(r["filename"], r["line_number"], r["issue_text"]) for r in report["results"]]
    assert report["metrics"]["_totals"]["loc"] > 1000  # it really scanned the code


def test_no_token_key_or_shopper_id_appears_in_any_log(tmp_path, bundle_dir, catalog_skus):
    cluster = Cluster(tmp_path, bundle_dir)
    cluster.origin.env["EDGEREC_LOG_LEVEL"] = "DEBUG"
    cluster.start_origin()
    try:
        cluster.publish()
        for sku in catalog_skus[:10]:
            cluster.put_offer(make_offer(f"GB-{sku}", sku))
        edge = cluster.start_edge(
            "GB", env={"EDGEREC_LOG_LEVEL": "DEBUG", "EDGEREC_CDN_SECRET": "cdn-secret-0123456789"}
        )
        shopper = "shopper-7f3a9c2e41"
        from edgerec.cli.process import http_call, http_json

        for _ in range(3):
            status, _ = http_json(
                edge.url, "POST", "/v1/recommendations", {"shopper_id": shopper, "recent_items": catalog_skus[:3]}
            )
            assert status == 200
        # Refused calls too: a wrong token must not be echoed into the log either.
        http_json(cluster.origin.url, "GET", "/v1/admin/models", None, {"Authorization": "Bearer wrong-token-abcdef"})
        http_call(
            edge.url,
            "GET",
            "/v1/recommendations",
            headers={"X-Edgerec-CDN-Secret": "guessed-secret-xyz", "CloudFront-Viewer-Country": "GB"},
        )
    finally:
        cluster.stop()
    logs = "".join(p.read_text(errors="replace") for p in (tmp_path / "logs").glob("*.log"))
    assert "serving data version" in logs  # the logs are there and hold the services' own lines
    private_key_body = "".join((tmp_path / "keys" / "signing_key.pem").read_text().splitlines()[1:-1])
    secrets = [
        cluster.admin_token,
        cluster.sync_token,
        *cluster.region_tokens.values(),
        private_key_body,
        "cdn-secret-0123456789",
        "wrong-token-abcdef",
        "guessed-secret-xyz",
        shopper,
    ]
    leaked = [s for s in secrets if s in logs]
    assert leaked == []
