"""The audit log of admin calls: who (the credential's fingerprint), what, when, from where, result; as JSON lines
on the `edgerec.audit` logger and as rows of the store's audit_log (SQLite and PostgreSQL); never a token."""

from __future__ import annotations

import hashlib
import json

import pytest

from edgerec.cli.process import http_call, http_json
from edgerec.cli.services import admin_headers
from origin_sync.origin.store import ChangeLogStore
from tests.conftest import Cluster, make_offer, needs_pg
from tests.store_support import run_on_store


def test_every_admin_call_is_audited_with_no_secret(tmp_path, bundle_dir, catalog_skus):
    cluster = Cluster(tmp_path, bundle_dir)
    cluster.origin.env["EDGEREC_LOG_LEVEL"] = "DEBUG"
    cluster.start_origin()
    wrong = "wrong-admin-token-0123456789"
    try:
        url, admin = cluster.origin.url, admin_headers(cluster.admin_token)
        cluster.publish()
        offer = make_offer(f"GB-{catalog_skus[0]}", catalog_skus[0])
        cluster.put_offer(offer)
        assert http_json(url, "DELETE", f"/v1/admin/offers/{offer['id']}", None, admin)[0] == 200
        assert http_json(url, "DELETE", "/v1/admin/offers/no-such-offer", None, admin)[0] == 404
        assert http_json(url, "GET", "/v1/admin/models", None, {"Authorization": f"Bearer {wrong}"})[0] == 401
        assert http_json(url, "POST", "/v1/admin/compact")[0] == 401  # no credential at all
        # Sync calls are not admin actions: not audited.
        gb = {"Authorization": f"Bearer {cluster.region_tokens['GB']}"}
        assert http_call(url, "GET", "/v1/sync/snapshot?regions=GB", headers=gb)[0] == 200
        assert http_json(url, "GET", "/v1/admin/audit?limit=0", None, admin)[0] == 422
        status, body = http_json(url, "GET", "/v1/admin/audit?limit=50", None, admin)
        assert status == 200
        rows = body["entries"]
    finally:
        cluster.stop()
    me = f"admin:{hashlib.sha256(cluster.admin_token.encode()).hexdigest()[:8]}"
    # Newest first; the refused limit=0 read is there too.
    seen = [(r["actor"], r["method"], r["path"], r["target"], r["status"]) for r in reversed(rows)]
    assert seen == [
        (
            me,
            "POST",
            "/v1/admin/models",
            f"model_version={json.loads((bundle_dir / 'manifest.json').read_text())['version']}",
            201,
        ),
        (me, "PUT", f"/v1/admin/offers/{offer['id']}", f"offer_id={offer['id']}", 200),
        (me, "DELETE", f"/v1/admin/offers/{offer['id']}", f"offer_id={offer['id']}", 200),
        (me, "DELETE", "/v1/admin/offers/no-such-offer", "offer_id=no-such-offer", 404),
        (None, "GET", "/v1/admin/models", None, 401),
        (None, "POST", "/v1/admin/compact", None, 401),
        (me, "GET", "/v1/admin/audit", None, 422),
    ]
    assert all(r["peer"] == "127.0.0.1" and r["ts"] > 0 for r in rows)
    lines = [
        json.loads(line)
        for line in cluster.origin.log_path.read_text().splitlines()
        if line.startswith("{") and '"edgerec.audit"' in line
    ]
    logged = [(e["audit"]["actor"], e["audit"]["method"], e["audit"]["path"], e["audit"]["status"]) for e in lines]
    assert logged[: len(seen)] == [(a, m, p, s) for a, m, p, _, s in seen]
    assert all(e["logger"] == "edgerec.audit" and e["audit"]["peer"] == "127.0.0.1" for e in lines)
    everything = json.dumps(rows) + cluster.origin.log_path.read_text()
    secrets = [cluster.admin_token, wrong, cluster.sync_token, *cluster.region_tokens.values()]
    assert [s for s in secrets if s in everything] == []


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgres", marks=needs_pg)])
def test_both_stores_keep_read_and_purge_the_audit_log(kind, tmp_path, request):
    async def scenario(store: ChangeLogStore) -> None:
        for i in range(5):
            await store.record_audit(
                {
                    "ts": 1000.0 + i,
                    "actor": "admin:0123abcd" if i else None,
                    "method": "PUT",
                    "path": f"/v1/admin/offers/o{i}",
                    "target": f"offer_id=o{i}",
                    "peer": "10.0.0.1",
                    "status": 200 if i else 401,
                }
            )
        newest = await store.audit_log(3)
        assert [r["path"] for r in newest] == ["/v1/admin/offers/o4", "/v1/admin/offers/o3", "/v1/admin/offers/o2"]
        assert newest[0]["actor"] == "admin:0123abcd" and newest[0]["status"] == 200 and newest[0]["ts"] == 1004.0
        oldest = (await store.audit_log(100))[-1]
        assert oldest["actor"] is None and oldest["status"] == 401
        assert await store.purge_audit(1002.0) == 2
        assert len(await store.audit_log(100)) == 3
        assert (await store.head()).version == 0  # audit entries are not changes: nothing is synced

    run_on_store(kind, tmp_path, request, scenario)
