"""Experiments through real processes: defined at the origin, synced in the signed change log, served by edges
with both models side by side, the same shopper in the same variant on every edge."""

from __future__ import annotations

import json
import time

import pytest

from edgerec.cli.process import http_json
from origin_sync.wire.experiments import assign
from tests.cli_support import run_cli
from tests.conftest import make_offer


def _version(bundle) -> str:
    return json.loads((bundle / "manifest.json").read_text())["version"]


@pytest.fixture
def two_models(cluster, catalog_skus, second_bundle_dir):
    """The second model published (kept as a variant's model), then the first made active again."""
    cluster.publish(second_bundle_dir)
    cluster.publish()
    for sku in catalog_skus[:30]:
        cluster.put_offer(make_offer(f"GB-{sku}", sku, group=f"g{len(sku) % 3}"))
        cluster.put_offer(make_offer(f"DE-{sku}", sku, region="DE", currency="EUR"))
    return cluster


def put_experiment(cluster, body: dict) -> tuple[int, dict]:
    return http_json(
        cluster.origin.url,
        "PUT",
        f"/v1/admin/experiments/{body['id']}",
        body,
        {"Authorization": f"Bearer {cluster.admin_token}"},
    )


def recommend(edge, shopper: str | None, catalog_skus) -> dict:
    payload = {"recent_items": catalog_skus[:3], "k": 5, **({"shopper_id": shopper} if shopper else {})}
    status, answer = http_json(edge.url, "POST", "/v1/recommendations", payload)
    assert status == 200, answer
    return answer


def test_an_experiment_takes_effect_atomically_with_its_data_version_and_splits_shoppers_deterministically(
    two_models, catalog_skus, second_bundle_dir
):
    cluster = two_models
    gb, de = cluster.start_edge("GB"), cluster.start_edge("DE")
    control_model, treatment_model = _version(cluster.bundle), _version(second_bundle_dir)
    before = recommend(gb, "s-0", catalog_skus)
    assert before["experiment"] is None and before["variant"] is None

    body = {
        "id": "ranker-v2",
        "variants": [
            {"name": "control", "weight": 1},
            {"name": "treatment", "weight": 1, "model": treatment_model, "max_per_group": 1},
        ],
    }
    status, saved = put_experiment(cluster, body)
    assert status == 200, saved
    version = saved["data_version"]
    assert saved["experiment"]["variants"][1]["model_ref"]["version"] == treatment_model
    # Every answer before the experiment's data version has no experiment; every answer at or after it has one.
    deadline = time.monotonic() + 15
    while True:
        answer = recommend(gb, "s-1", catalog_skus)
        assert (answer["experiment"] == "ranker-v2") == (answer["data_version"] >= version), answer
        if answer["data_version"] >= version:
            break
        assert time.monotonic() < deadline, "the experiment never reached the edge"
    while recommend(de, "s-1", catalog_skus)["data_version"] < version:
        time.sleep(0.02)

    experiment = saved["experiment"]
    counts = {"control": 0, "treatment": 0}
    for i in range(400):
        shopper = f"shopper-{i}"
        expected = assign(experiment, shopper)
        for edge in (gb, de):
            answer = recommend(edge, shopper, catalog_skus)
            assert (answer["experiment"], answer["variant"]) == ("ranker-v2", expected)
            assert answer["model_version"] == (treatment_model if expected == "treatment" else control_model)
        groups = [o["offer_id"] for o in recommend(gb, shopper, catalog_skus)["offers"]]
        counts[expected] += 1
        if expected == "treatment":  # the variant's rule override: one offer per product group
            assert len(groups) <= 3
    assert 160 <= counts["treatment"] <= 240  # 50% ± 4 standard deviations

    # Anonymous shoppers (no id, and the GET form) get the control and are not enrolled.
    anonymous = recommend(gb, None, catalog_skus)
    assert anonymous["experiment"] is None and anonymous["model_version"] == control_model
    status, cached = http_json(gb.url, "GET", "/v1/recommendations?k=3")
    assert status == 200 and cached["experiment"] is None

    # Stopping it (CLI: end = now) takes it out with the next data version.
    origin, token = ("--origin", cluster.origin.url), cluster.admin_token
    stop = run_cli("experiments", "stop", "ranker-v2", *origin, admin_token=token, timeout=60)
    assert stop.returncode == 0, stop.stderr
    listing = run_cli("experiments", "list", *origin, admin_token=token, timeout=60)
    assert "ranker-v2\tended" in listing.stdout, listing.stdout + listing.stderr
    deadline = time.monotonic() + 10
    while recommend(gb, "s-1", catalog_skus)["experiment"] is not None:
        assert time.monotonic() < deadline
        time.sleep(0.02)


def test_an_experiment_is_validated_like_an_offer_and_needs_published_models(two_models):
    status, body = put_experiment(
        two_models, {"id": "x", "variants": [{"name": "a"}, {"name": "b", "model": "no-such-model"}]}
    )
    assert status == 422 and "no-such-model" in body["error"]["message"]
    status, body = put_experiment(two_models, {"id": "x", "variants": [{"name": "a"}]})
    assert status == 422 and "variants" in body["error"]["message"]
    status, body = http_json(
        two_models.origin.url,
        "GET",
        "/v1/admin/experiments/x",
        headers={"Authorization": f"Bearer {two_models.admin_token}"},
    )
    assert status == 404
    # One shopper, one experiment: a second experiment over the same region and time is refused with 409.
    status, _ = put_experiment(two_models, {"id": "y", "regions": ["GB"], "variants": [{"name": "a"}, {"name": "b"}]})
    assert status == 200
    status, body = put_experiment(two_models, {"id": "z", "variants": [{"name": "a"}, {"name": "b"}]})
    assert status == 409 and body["error"]["code"] == "experiment_overlap" and "'y'" in body["error"]["message"]
    status, _ = http_json(two_models.origin.url, "GET", "/v1/admin/experiments")
    assert status == 401


def test_an_edge_restarted_from_disk_keeps_serving_the_experiment(two_models, catalog_skus, second_bundle_dir):
    cluster = two_models
    edge = cluster.start_edge("GB")
    status, saved = put_experiment(
        cluster,
        {
            "id": "e2",
            "regions": ["GB"],
            "variants": [{"name": "control"}, {"name": "boosted", "boosts": {f"GB-{catalog_skus[29]}": 50.0}}],
        },
    )
    assert status == 200
    while recommend(edge, "s", catalog_skus)["data_version"] < saved["data_version"]:
        time.sleep(0.02)
    edge.stop()
    cluster.origin.stop()
    edge = cluster.start_edge("GB", port=edge.port)
    shopper = next(f"s{i}" for i in range(1000) if assign(saved["experiment"], f"s{i}") == "boosted")
    answer = recommend(edge, shopper, catalog_skus)
    assert answer["variant"] == "boosted" and answer["offers"][0]["offer_id"] == f"GB-{catalog_skus[29]}"
