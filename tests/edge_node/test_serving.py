"""An edge node in front of a real origin: what shoppers get, and how changes at the origin reach them."""

from __future__ import annotations

import json

import pytest

from edgerec.cli.process import http_call, http_json
from tests.conftest import make_offer, wait_until

# The seeded clusters (tests/conftest.py): the model and 30 GB offers plus 10 DE offers of catalog items; writers
# get a fresh one (`seeded`), the tests that change nothing share one (`module_seeded`).
SEEDED_OFFERS = {"gb": 30, "de": 10}


def recommend(edge, payload: dict) -> tuple[int, dict]:
    return http_json(edge.url, "POST", "/v1/recommendations", payload)


@pytest.fixture(scope="module")
def gb_edge(module_seeded):
    """One GB edge of the shared origin, for the tests that only ask it."""
    return module_seeded.start_edge("GB")


def served_ids(answer: dict) -> list[str]:
    return [o["offer_id"] for o in answer["offers"]]


def test_an_edge_serves_ranked_offers_of_its_region_only(gb_edge, module_seeded, catalog_skus):
    edge = gb_edge
    status, answer = recommend(edge, {"shopper_id": "s-1", "recent_items": catalog_skus[:5], "k": 10})
    assert status == 200, answer
    assert len(answer["offers"]) == 10
    assert all(o["offer_id"].startswith("GB-") and o["currency"] == "GBP" for o in answer["offers"])
    scores = [o["score"] for o in answer["offers"]]
    assert scores == sorted(scores, reverse=True)
    assert answer["region"] == "GB" and answer["fallback"] is None and answer["request_id"]
    assert answer["model_version"] == json.loads((module_seeded.bundle / "manifest.json").read_text())["version"]
    status, answer = recommend(edge, {"region": "DE", "recent_items": []})
    assert status == 404 and "GB" in answer["error"]["message"]


def test_recommendations_depend_on_the_shopper_history(gb_edge, catalog_skus):
    edge = gb_edge
    anonymous = served_ids(recommend(edge, {"recent_items": [], "k": 10})[1])
    for history in (catalog_skus[:3], catalog_skus[10:13] * 3, catalog_skus[20:30]):
        # Every history moves the answer away from the popularity ranking an empty context gets.
        assert served_ids(recommend(edge, {"recent_items": history, "k": 10})[1]) != anonymous, history


def test_an_offer_changed_at_the_origin_is_served_by_the_edge(seeded, catalog_skus):
    edge = seeded.start_edge("GB")
    request = {"recent_items": catalog_skus[:5], "k": 30}
    top = recommend(edge, request)[1]["offers"][0]
    changed = seeded.put_offer(make_offer(top["offer_id"], top["sku"], price=1.23, title="On sale"))

    def served():
        answer = recommend(edge, request)[1]
        offer = next((o for o in answer["offers"] if o["offer_id"] == top["offer_id"]), None)
        return answer if offer and offer["price"] == 1.23 and offer["title"] == "On sale" else None

    answer = wait_until(served, what="the changed price")
    assert answer["data_version"] == changed["data_version"]

    seeded.put_offer(make_offer(top["offer_id"], top["sku"], stock=0))
    wait_until(lambda: top["offer_id"] not in served_ids(recommend(edge, request)[1]), what="sold-out offer gone")
    status, _ = http_json(
        seeded.origin.url,
        "DELETE",
        f"/v1/admin/offers/GB-{catalog_skus[1]}",
        None,
        {"Authorization": f"Bearer {seeded.admin_token}"},
    )
    assert status == 200
    wait_until(
        lambda: f"GB-{catalog_skus[1]}" not in served_ids(recommend(edge, request)[1]), what="deleted offer gone"
    )


def test_campaign_windows_and_exclusions_rule_offers_out(seeded, catalog_skus):
    edge = seeded.start_edge("GB")
    request = {"recent_items": catalog_skus[:5], "k": 30}
    everything = served_ids(recommend(edge, request)[1])
    assert len(everything) == 30
    future = seeded.put_offer(make_offer(everything[0], everything[0][3:], active_from="2999-01-01T00:00:00Z"))
    wait_until(lambda: recommend(edge, request)[1]["data_version"] >= future["data_version"], what="new version")
    assert everything[0] not in served_ids(recommend(edge, request)[1])
    # The shopper's own clock decides the window when the request carries one.
    in_window = {**request, "context": {"time": "2999-06-01T12:00:00Z"}}
    assert everything[0] in served_ids(recommend(edge, in_window)[1])
    excluded = served_ids(recommend(edge, {**request, "exclude": [everything[1], everything[2][3:]]})[1])
    assert everything[1] not in excluded and everything[2] not in excluded


def test_an_edge_restarted_mid_run_catches_up(seeded, catalog_skus):
    edge = seeded.start_edge("GB")
    request = {"recent_items": catalog_skus[:5], "k": 30}
    assert recommend(edge, request)[0] == 200
    edge.kill()  # SIGKILL: no chance to shut down cleanly
    seeded.put_offer(make_offer("GB-new", catalog_skus[50], title="Brand new"))
    last = seeded.put_offer(make_offer(f"GB-{catalog_skus[0]}", catalog_skus[0], price=0.5))
    restarted = seeded.start_edge("GB", port=edge.port)
    answer = wait_until(
        lambda: (a := recommend(restarted, request)[1])["data_version"] >= last["data_version"] and a, what="catch-up"
    )
    served = {o["offer_id"]: o for o in answer["offers"]}
    assert "GB-new" in served and served[f"GB-{catalog_skus[0]}"]["price"] == 0.5


def test_an_edge_without_a_model_is_alive_but_not_ready(cluster, catalog_skus):
    cluster.put_offer(make_offer("GB-1", catalog_skus[0]))
    edge = cluster.start_edge("GB", ready=False)
    edge.wait_ready("/healthz")
    status, _, raw = http_call(edge.url, "GET", "/readyz")
    assert status == 503 and json.loads(raw)["ready"] is False
    status, answer = recommend(edge, {"recent_items": []})
    assert status == 503 and answer["error"]["code"] == "not_ready"
    cluster.publish()
    edge.wait_ready("/readyz")
    assert recommend(edge, {"recent_items": []})[0] == 200


def test_metrics_and_openapi_are_served(module_seeded):
    edge = module_seeded.start_edge("GB")  # an edge of its own: its request counter starts at zero
    recommend(edge, {"recent_items": []})
    status, _, raw = http_call(edge.url, "GET", "/metrics")
    text = raw.decode()
    assert status == 200
    assert 'edgerec_requests_total{method="POST",route="/v1/recommendations",status="200"} 1.0' in text
    assert "edgerec_sync_staleness_seconds" in text and "edgerec_data_version" in text
    status, _, raw = http_call(edge.url, "GET", "/openapi.json")
    spec = json.loads(raw)
    assert status == 200 and spec["openapi"].startswith("3.")
    assert "/v1/recommendations" in spec["paths"]


BAD_REQUESTS = [
    ("not json", b"{this is not json", 400, "JSON"),
    ("empty body", b"", 400, "empty"),
    ("json array", b"[1, 2, 3]", 422, "object"),
    ("k is a string", b'{"k": "ten"}', 422, "k"),
    ("k zero", b'{"k": 0}', 422, "k"),
    ("k negative", b'{"k": -3}', 422, "k"),
    ("k huge", b'{"k": 1000000000}', 422, "k"),
    ("k beyond 64 bits", b'{"k": 100000000000000000000000}', 422, "k"),
    ("k boolean", b'{"k": true}', 422, "k"),
    ("recent_items not a list", b'{"recent_items": "85123A"}', 422, "recent_items"),
    ("recent_items of numbers", b'{"recent_items": [1, 2]}', 422, "recent_items[0]"),
    ("negative age", b'{"recent_items": [{"item": "1", "age_days": -1}]}', 422, "age_days"),
    ("too many recent items", json.dumps({"recent_items": ["1"] * 1001}).encode(), 422, "recent_items"),
    ("unknown field of a wrong type", b'{"colour": {"r": 1}}', 422, "colour"),
    ("unknown region", b'{"region": "ZZ"}', 404, "ZZ"),
    ("malformed region", b'{"region": 42}', 422, "region"),
    ("bad time", b'{"context": {"time": "yesterday"}}', 422, "time"),
    ("unknown context field", b'{"context": {"ip": "1.2.3.4"}}', 422, "ip"),
    ("deep nesting", b"[" * 5000 + b"]" * 5000, 400, "JSON"),
    ("NaN literal", b'{"k": NaN}', 400, "JSON"),
    ("huge body", b'{"recent_items": ["' + b"x" * 200_000 + b'"]}', 413, "bytes"),
]


def test_malformed_requests_get_a_4xx_json_error_that_says_what_is_wrong(gb_edge):
    edge = gb_edge
    for name, body, status, mention in BAD_REQUESTS:
        got, headers, raw = http_call(
            edge.url, "POST", "/v1/recommendations", body, {"Content-Type": "application/json"}
        )
        assert got == status, (name, got, raw[:200])
        assert headers["content-type"].startswith("application/json"), name
        assert mention in json.loads(raw)["error"]["message"], (name, raw[:200])
    got, _, raw = http_call(edge.url, "POST", "/v1/recommendations", b"<xml/>", {"Content-Type": "application/xml"})
    assert got == 415 and json.loads(raw)["error"]["code"] == "unsupported_media_type"
    got, headers, raw = http_call(edge.url, "PUT", "/v1/recommendations", b"{}")
    assert got == 405 and json.loads(raw)["error"]["code"] == "method_not_allowed"
    assert headers["allow"] == "GET, HEAD, POST"
    # The edge is still healthy and serving after all of that.
    assert http_call(edge.url, "GET", "/healthz")[0] == 200
    assert recommend(edge, {"recent_items": []})[0] == 200


def test_an_edge_with_several_workers_serves_from_every_one(module_seeded, catalog_skus):
    edge = module_seeded.start_edge("GB", args=["--workers", "2", "--profile-store", "off"])
    seen = set()
    for _ in range(40):  # new connections spread over the workers; each has its own synced copy
        status, answer = recommend(edge, {"recent_items": catalog_skus[:3]})
        assert status == 200 and answer["data_version"] > 0
        seen.add(answer["request_id"])
    assert len(seen) == 40
    import subprocess

    workers = subprocess.run(["pgrep", "-P", str(edge.process.pid)], capture_output=True, text=True).stdout.split()
    assert len(workers) >= 2


def test_a_trailing_slash_is_answered_as_json_not_redirected(gb_edge):
    edge = gb_edge
    for path in ("/healthz/", "/v1/recommendations/", "/nope"):
        status, headers, raw = http_call(edge.url, "GET", path)
        assert status == 404 and headers["content-type"].startswith("application/json"), (path, status, raw)
        assert json.loads(raw)["error"]["code"] == "not_found"
