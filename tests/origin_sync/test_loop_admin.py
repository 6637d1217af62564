"""The admin API of the learning loop: events as pages, a model's bundle, retiring a candidate, decisions."""

from __future__ import annotations

import msgpack
import pytest

from edgerec.cli.process import http_call  # noqa: E402
from edgerec.cli.services import admin_headers  # noqa: E402
from tests.loop_support import row, store_events


def test_events_come_in_pages_in_time_order_with_their_offers_skus(cluster) -> None:
    from tests.conftest import make_offer

    cluster.put_offer(make_offer("GB-1", "85123A"))
    events = [
        row(
            {
                "id": f"e{n:03d}",
                "kind": "impression",
                "ts": 100.0 + n // 2,
                "region": "GB",
                "request_id": f"r{n}",
                "offer_ids": ["GB-1", "NOPE"],
            }
        )
        for n in range(25)
    ]
    store_events(cluster.workdir / "origin" / "events.db", events[::-1])
    got, query, skus = [], "", {}
    while True:
        page = cluster.admin("GET", f"/v1/admin/events?limit=10{query}")
        got += page["events"]
        skus |= page["skus"]
        if page["next"] is None:
            break
        query = f"&after_ts={page['next']['after_ts']}&after_id={page['next']['after_id']}"
    assert [e["id"] for e in got] == [e["id"] for e in events]
    assert got[0]["offer_ids"] == ["GB-1", "NOPE"] and skus == {"GB-1": "85123A"}
    with pytest.raises(RuntimeError, match="after_ts and after_id go together"):
        cluster.admin("GET", "/v1/admin/events?after_ts=1")


def test_a_bundle_downloads_as_published_and_only_a_non_active_model_retires(cluster, second_bundle_dir) -> None:
    active = cluster.publish()["model_version"]
    candidate = cluster.publish(second_bundle_dir, state="candidate")["model_version"]
    status, _, raw = http_call(
        cluster.origin.url, "GET", f"/v1/admin/models/{candidate}/bundle", headers=admin_headers(cluster.admin_token)
    )
    assert status == 200
    bundle = msgpack.unpackb(raw)
    assert bundle["model"] == (second_bundle_dir / "model.onnx").read_bytes()
    assert bundle["manifest"]["version"] == candidate
    with pytest.raises(RuntimeError, match="HTTP 409"):
        cluster.admin("POST", f"/v1/admin/models/{active}/retire")
    assert cluster.admin("POST", f"/v1/admin/models/{candidate}/retire")["was"] == "candidate"
    states = {m["version"]: m["state"] for m in cluster.admin("GET", "/v1/admin/models")["models"]}
    assert states == {active: "active", candidate: "retired"}


def test_a_decision_is_stored_with_its_evidence_and_named_in_the_audit_log(cluster) -> None:
    entry = {"pipeline": "p", "round": "r1", "step": "gate", "decision": "passed", "evidence": {"ndcg": 0.4}}
    cluster.admin("POST", "/v1/admin/pipeline/decisions", entry)
    [stored] = cluster.admin("GET", "/v1/admin/pipeline/decisions?pipeline=p")["decisions"]
    assert stored["evidence"] == {"ndcg": 0.4} and stored["decision"] == "passed"
    audit = cluster.admin("GET", "/v1/admin/audit")["entries"]
    assert audit[1]["target"] == "pipeline=p,round=r1,step=gate,decision=passed"
    with pytest.raises(RuntimeError, match="step: a string"):
        cluster.admin("POST", "/v1/admin/pipeline/decisions", {**entry, "step": ""})
