"""Traces through real processes, exported to files: an answer follows the request's traceparent with its fields and
the spans of its rules and model run, and no shopper id or pseudonym anywhere; an admin write at the origin, the
edge's sync and each edge's applying of it join up by trace; event shipping carries the trace on; off exports
nothing."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from edgerec.cli.process import http_call, http_json
from edgerec.cli.services import Cluster, admin_headers
from edgerec.core.tracing import read_spans
from origin_sync.wire.events import pseudonym_key, pseudonymize
from tests.conftest import make_offer, seed, wait_until

SHOPPER = "shopper-7f3a-trace-probe"


def traceparent(sampled: bool = True) -> tuple[str, str, str]:
    """(header, trace id, parent span id) of a new W3C traceparent."""
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return f"00-{trace_id}-{span_id}-{'01' if sampled else '00'}", trace_id, span_id


def hexid(value: str | None) -> str | None:
    return value[2:] if value else None


def spans_of(path: Path, trace_id: str) -> list[dict]:
    return [s for s in read_spans(path) if hexid(s["context"]["trace_id"]) == trace_id]


@pytest.fixture(scope="module")
def traced(tmp_path_factory, bundle_dir, catalog_skus):
    """An origin and a GB edge, both tracing every new trace (sample 1) into their own span files."""
    workdir = tmp_path_factory.mktemp("traced")
    files = {"origin": workdir / "origin-spans.jsonl", "edge": workdir / "edge-spans.jsonl"}
    cluster = Cluster(
        workdir,
        bundle_dir,
        origin_env={"EDGEREC_TRACE_SAMPLE": "1", "EDGEREC_TRACE_EXPORTER": f"file:{files['origin']}"},
    )
    cluster.start_origin()
    try:
        seed(cluster, catalog_skus)
        edge = cluster.start_edge(
            "GB", env={"EDGEREC_TRACE_SAMPLE": "1", "EDGEREC_TRACE_EXPORTER": f"file:{files['edge']}"}
        )
        yield cluster, edge, files
    finally:
        cluster.stop()


def test_an_answer_follows_the_requests_traceparent_with_its_fields_and_no_shopper(traced, catalog_skus):
    cluster, edge, files = traced
    header, trace_id, parent_id = traceparent()
    status, answer = http_json(
        edge.url,
        "POST",
        "/v1/recommendations",
        {"shopper_id": SHOPPER, "recent_items": catalog_skus[:2], "k": 3},
        {"traceparent": header},
    )
    assert status == 200, answer
    spans = wait_until(
        lambda: (
            {s["name"]: s for s in spans_of(files["edge"], trace_id)}
            if len(spans_of(files["edge"], trace_id)) >= 5
            else None
        ),
        what="the answer's spans",
    )
    root = spans["edge.recommendation"]
    assert hexid(root["parent_id"]) == parent_id and root["kind"] == "SpanKind.SERVER"
    attributes = root["attributes"]
    assert attributes["edgerec.region"] == "GB" == answer["region"]
    assert attributes["edgerec.model_version"] == answer["model_version"]
    assert attributes["edgerec.data_version"] == answer["data_version"]
    assert attributes["edgerec.batch_size"] >= 1 and attributes["edgerec.offers"] == len(answer["offers"])
    assert attributes["http.response.status_code"] == 200
    assert "edgerec.fallback" not in attributes  # the model ranked it
    assert attributes["edgerec.profile"] == answer["profile"] == "request"  # recent_items sent: no profile read
    for child in ("edge.profile", "edge.rules.mask", "edge.model", "edge.rules.rank"):
        assert spans[child]["parent_id"] == root["context"]["span_id"], child
    assert spans["edge.model"]["attributes"]["edgerec.batch_size"] == attributes["edgerec.batch_size"]
    # Neither the shopper's id nor its pseudonym (what the edge's events carry) is in any span either service exported.
    pseudonym = pseudonymize(pseudonym_key(cluster.pseudonym_key), SHOPPER)
    for path in files.values():
        text = path.read_text()
        assert SHOPPER not in text and pseudonym not in text


def test_a_profile_hit_is_said_and_the_shopper_is_not(traced):
    cluster, edge, files = traced
    shopper = "shopper-traced-with-a-profile"
    status, first = http_json(edge.url, "POST", "/v1/recommendations", {"shopper_id": shopper, "k": 3})
    assert status == 200 and first["profile"] == "miss"
    bought = first["offers"][0]["offer_id"]
    event = {"type": "purchase", "request_id": first["request_id"], "offer_ids": [bought], "shopper_id": shopper}
    event.update(region="GB", value=9.99, currency="GBP")
    assert http_json(edge.url, "POST", "/v1/events", {"events": [event]})[0] == 202
    header, trace_id, _ = traceparent()
    status, answer = http_json(
        edge.url, "POST", "/v1/recommendations", {"shopper_id": shopper, "k": 3}, {"traceparent": header}
    )
    assert status == 200 and answer["profile"] == "hit", answer
    root = wait_until(
        lambda: next((s for s in spans_of(files["edge"], trace_id) if s["name"] == "edge.recommendation"), None),
        what="the answer's span",
    )
    assert root["attributes"]["edgerec.profile"] == "hit"
    pseudonym = pseudonymize(pseudonym_key(cluster.pseudonym_key), shopper)
    text = files["edge"].read_text()
    assert shopper not in text and pseudonym not in text


def test_an_answer_from_the_fallback_says_why_and_has_no_model_run(traced, tmp_path):
    cluster, _, _ = traced
    spans_file = tmp_path / "edge-spans.jsonl"
    # Any model run overruns a budget of 0.1 µs: the breaker then sends the next answers to the fallback for 5 s.
    env = {
        "EDGEREC_TRACE_SAMPLE": "1",
        "EDGEREC_TRACE_EXPORTER": f"file:{spans_file}",
        "EDGEREC_MODEL_BUDGET_MS": "0.0001",
    }
    edge = cluster.start_edge("GB", env=env, label="edge-fallback")
    http_json(edge.url, "POST", "/v1/recommendations", {"shopper_id": SHOPPER, "k": 3})
    header, trace_id, _ = traceparent()
    status, answer = http_json(
        edge.url, "POST", "/v1/recommendations", {"shopper_id": SHOPPER, "k": 3}, {"traceparent": header}
    )
    assert status == 200 and answer["fallback"] == "latency_budget", answer
    spans = wait_until(
        lambda: (
            {s["name"]: s for s in spans_of(spans_file, trace_id)} if len(spans_of(spans_file, trace_id)) >= 4 else None
        ),
        what="the fallback answer's spans",
    )
    assert spans["edge.recommendation"]["attributes"]["edgerec.fallback"] == "latency_budget"
    assert "edgerec.batch_size" not in spans["edge.recommendation"]["attributes"]  # no model run scored it
    assert set(spans) == {"edge.recommendation", "edge.profile", "edge.rules.mask", "edge.rules.rank"}


def test_an_unsampled_traceparent_is_followed_and_not_recorded(traced, catalog_skus):
    _, edge, files = traced
    header, trace_id, _ = traceparent(sampled=False)
    status, _ = http_json(
        edge.url, "POST", "/v1/recommendations", {"shopper_id": SHOPPER, "k": 3}, {"traceparent": header}
    )
    assert status == 200
    sampled, sampled_id, _ = traceparent()  # a later, sampled request: once its spans are out, the first's would be
    http_json(edge.url, "POST", "/v1/recommendations", {"shopper_id": SHOPPER, "k": 3}, {"traceparent": sampled})
    wait_until(lambda: spans_of(files["edge"], sampled_id), what="the sampled request's spans")
    assert spans_of(files["edge"], trace_id) == []


def test_an_anonymous_answer_says_whether_it_came_from_the_cache(traced):
    _, edge, files = traced
    seen = []
    for _ in range(2):
        header, trace_id, _ = traceparent()
        status, _, _ = http_call(edge.url, "GET", "/v1/recommendations?region=GB&k=4", headers={"traceparent": header})
        assert status == 200
        root = wait_until(
            lambda: next((s for s in spans_of(files["edge"], trace_id) if s["name"] == "edge.recommendation"), None),
            what="the anonymous answer's span",
        )
        seen.append(root["attributes"]["edgerec.anonymous_cache"])
    assert seen[-1] == "hit"


def test_an_admin_write_and_the_edges_applying_of_it_join_in_one_trace(traced):
    cluster, edge, files = traced
    header, trace_id, parent_id = traceparent()
    status, body = http_json(
        cluster.origin.url,
        "PUT",
        "/v1/admin/offers/GB-TRACED",
        make_offer("GB-TRACED", "TRACED1"),
        {**admin_headers(cluster.admin_token), "traceparent": header},
    )
    assert status == 200, body
    version = body["data_version"]
    cluster.wait_for_version(version)
    write = wait_until(
        lambda: next((s for s in spans_of(files["origin"], trace_id) if s["name"].startswith("admin PUT")), None),
        what="the admin write's span",
    )
    assert hexid(write["parent_id"]) == parent_id and write["attributes"]["edgerec.data_version"] == version
    assert write["attributes"]["http.route"] == "/v1/admin/offers/{offer_id}"
    # The edge's applying of it is in the write's trace, a child of the write's span.
    applied = wait_until(
        lambda: next((s for s in spans_of(files["edge"], trace_id) if s["name"] == "edge.sync.apply"), None),
        what="the edge's applying of the write",
    )
    assert applied["parent_id"] == write["context"]["span_id"]
    assert applied["attributes"]["edgerec.data_version"] >= version
    # The GB edge's long-poll that brought it: its trace went to the origin, whose span of it links to the write.
    edge_spans = {s["context"]["span_id"]: s for s in read_spans(files["edge"])}
    polls = [
        s
        for s in read_spans(files["origin"])
        if s["name"] == "sync GET /v1/sync/deltas"
        and s["parent_id"] in edge_spans
        and any(link["context"]["span_id"] == write["context"]["span_id"] for link in s.get("links", []))
    ]
    assert polls, "no delta answer to the GB edge linked to the write"
    poll = polls[0]
    edge_poll = edge_spans[poll["parent_id"]]
    assert edge_poll["name"] == "sync GET /v1/sync/deltas" and edge_poll["kind"] == "SpanKind.CLIENT"
    assert edge_poll["context"]["trace_id"] == poll["context"]["trace_id"]
    assert poll["attributes"]["sync.since"] < version <= poll["attributes"]["sync.to"]


def test_event_shipping_carries_its_trace_to_the_origin(traced):
    _, edge, files = traced
    shipped = wait_until(
        lambda: [s for s in read_spans(files["edge"]) if s["name"] == "events ship"],
        what="a shipping span",
        timeout_s=60,
    )
    ids = {s["context"]["span_id"] for s in shipped}
    received = wait_until(
        lambda: [
            s for s in read_spans(files["origin"]) if s["name"] == "sync POST /v1/sync/events" and s["parent_id"] in ids
        ],
        what="the origin's span of a shipped batch",
    )
    assert received[0]["attributes"]["http.response.status_code"] == 200


def test_off_exports_nothing_even_with_an_exporter_named(tmp_path, bundle_dir, catalog_skus):
    origin_file, edge_file = tmp_path / "origin-spans.jsonl", tmp_path / "edge-spans.jsonl"
    cluster = Cluster(tmp_path, bundle_dir, origin_env={"EDGEREC_TRACE_EXPORTER": f"file:{origin_file}"})
    cluster.start_origin()
    try:
        seed(cluster, catalog_skus)
        edge = cluster.start_edge("GB", env={"EDGEREC_TRACE_EXPORTER": f"file:{edge_file}"})
        header, _, _ = traceparent()
        status, _ = http_json(
            edge.url, "POST", "/v1/recommendations", {"shopper_id": SHOPPER, "k": 3}, {"traceparent": header}
        )
        assert status == 200
        version = cluster.put_offer(make_offer("GB-OFF", "OFF1"))["data_version"]
        cluster.wait_for_version(version)
    finally:
        cluster.stop()
    assert not origin_file.exists() and not edge_file.exists()
