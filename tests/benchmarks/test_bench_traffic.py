"""Benchmark traffic and latency accounting: the request mix follows the edge's contract, histograms are exact."""

from __future__ import annotations

import json
import random

import pytest

from benchmarks.histogram import Histogram, LatencyRecorder, Measurement
from benchmarks.traffic import GEO_HEADER, SECRET_HEADER, Contract, RequestMix

TRAFFIC = {
    "regions": {"GB": 0.5, "DE": 0.5},
    "anonymous_share": 0.3,
    "k_weights": {"5": 0.5, "10": 0.5},
    "returning": {
        "GB": [{"shopper_id": "s-1", "recent_items": ["85123A", "71053"], "context": {"device": "mobile"}}],
        "DE": [{"shopper_id": "s-2", "recent_items": ["22423"], "exclude": ["DE-22423"]}],
    },
}


def test_returning_shoppers_post_their_history_with_the_cdn_headers() -> None:
    mix = RequestMix(TRAFFIC, "edgerec", Contract(anonymous_get=True, geo_header=True), "secret", seed=1)
    req = mix.returning_shopper("DE", 10, TRAFFIC["returning"]["DE"][0])
    body = json.loads(req.body)
    assert req.method == "POST" and body["recent_items"] == ["22423"] and body["k"] == 10
    assert "region" not in body  # the geo header carries it
    assert req.headers[GEO_HEADER] == "DE" and req.headers[SECRET_HEADER] == "secret"


def test_anonymous_shoppers_fall_back_to_post_with_region_before_the_get_form_exists() -> None:
    mix = RequestMix(TRAFFIC, "edgerec", Contract(anonymous_get=False, geo_header=False), "secret", seed=1)
    req = mix.anonymous("GB", 5)
    assert req.method == "POST" and json.loads(req.body) == {"region": "GB", "k": 5}


def test_cdn_traffic_is_anonymous_gets_without_the_secret() -> None:
    mix = RequestMix(TRAFFIC, "cdn", Contract(anonymous_get=True, geo_header=True), "secret", seed=1)
    for req in mix.sample(50):
        assert req.method == "GET" and req.kind == "anonymous"
        assert SECRET_HEADER not in req.headers and GEO_HEADER in req.headers


def test_peer_requests_carry_the_same_shopper_in_the_open_inference_protocol() -> None:
    mix = RequestMix(TRAFFIC, "peer", Contract(anonymous_get=True, geo_header=True), "secret", seed=1)
    req = mix.returning_shopper("DE", 10, TRAFFIC["returning"]["DE"][0])
    inputs = {i["name"]: i for i in json.loads(req.body)["inputs"]}
    assert req.path == "/v2/models/recommender/infer"
    assert inputs["recent_items"]["data"] == ["22423"] and inputs["region"]["data"] == ["DE"]
    assert inputs["k"]["data"] == [10] and inputs["exclude"]["data"] == ["DE-22423"]
    # A batch of one per tensor, as Triton's batching models take it (MLServer reads it too).
    assert inputs["recent_items"]["shape"] == [1, 1] and inputs["k"]["shape"] == [1, 1]
    anonymous = {i["name"] for i in json.loads(mix.anonymous("DE", 10).body)["inputs"]}
    assert anonymous == {"region", "k"}  # no empty BYTES tensors: PyTriton 0.7 cannot pass them on


def test_histogram_quantiles_are_within_one_percent_of_the_exact_ones() -> None:
    rng = random.Random(3)
    samples = [rng.lognormvariate(0.0, 1.0) for _ in range(20000)]
    hist = Histogram()
    for s in samples:
        hist.add(s)
    samples.sort()
    for q in (0.5, 0.95, 0.99, 0.999):
        exact = samples[int(q * len(samples)) - 1]
        assert hist.quantile(q) == pytest.approx(exact, rel=0.011)
    assert hist.quantile(1.0) == pytest.approx(samples[-1])


def test_recorder_skips_the_warm_up_and_counts_errors_apart() -> None:
    recorder = LatencyRecorder(warmup_s=1.0)
    recorder.record("returning", 5.0, False, start_time=100.0)  # warm-up
    recorder.record("returning", 2.0, False, start_time=101.5)
    recorder.record("anonymous", 1.0, True, start_time=102.0)
    measured = Measurement.merge([recorder.to_json()])
    assert measured is not None
    assert measured.total.count == 1 and measured.total.errors == 1
    assert measured.summary()["requests"] == 2


def test_padded_peer_requests_send_power_of_two_shapes_that_triton_can_batch() -> None:
    from benchmarks.traffic import bucket_padded

    assert bucket_padded([]) == [""] and bucket_padded(["a"]) == ["a"]
    assert bucket_padded(["a", "b", "c"]) == ["", "a", "b", "c"] and len(bucket_padded(["x"] * 5)) == 8
    mix = RequestMix(TRAFFIC, "peer_padded", Contract(anonymous_get=True, geo_header=True), "secret", seed=1)
    anonymous = {i["name"]: i for i in json.loads(mix.anonymous("DE", 10).body)["inputs"]}
    assert anonymous["recent_items"]["shape"] == [1, 1] and anonymous["recent_items"]["data"] == [""]
    assert anonymous["exclude"]["data"] == [""]
