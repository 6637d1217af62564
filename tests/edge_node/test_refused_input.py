"""Input the edge must refuse (issue 21): numbers out of their documented range, answered with a JSON 422 that names
the field."""

from __future__ import annotations

import json

import pytest

from edge_node.openapi import build_openapi
from edge_node.validation import (
    MAX_AGE_DAYS,
    MAX_EPOCH_S,
    RequestError,
    parse_anonymous_query,
    parse_recommendation_request,
)
from edgerec.services import http_call
from tests.conftest import make_offer

MAX_K = 100


def refused(body: dict) -> RequestError:
    with pytest.raises(RequestError) as caught:
        parse_recommendation_request(json.dumps(body).encode(), MAX_K, 10)
    return caught.value


@pytest.mark.parametrize("body, field", [
    ({"recent_items": [{"item": "A", "age_days": 1e308}]}, "recent_items[0].age_days"),
    ({"recent_items": ["B", {"item": "A", "age_days": MAX_AGE_DAYS + 0.001}]}, "recent_items[1].age_days"),
    ({"recent_items": [{"item": "A", "age_days": -1}]}, "recent_items[0].age_days"),
    ({"recent_items": [{"item": "A", "age_days": True}]}, "recent_items[0].age_days"),
    ({"recent_items": [{"item": "A", "age_days": "3"}]}, "recent_items[0].age_days"),
    ({"context": {"time": 1e300}}, "context.time"),
    ({"context": {"time": -1}}, "context.time"),
    ({"context": {"time": MAX_EPOCH_S + 1}}, "context.time"),
    ({"context": {"time": 1.7e12}}, "context.time"),  # epoch milliseconds, not seconds
    ({"context": {"time": True}}, "context.time"),
    ({"k": 0}, "k"), ({"k": MAX_K + 1}, "k"), ({"k": 1e300}, "k"), ({"k": 5.0}, "k"), ({"k": True}, "k"),
])
def test_every_number_of_a_request_is_bounded_and_the_error_names_its_field(body, field):
    error = refused(body)
    assert (error.status, error.code) == (422, "invalid_request")
    assert error.message.startswith(f"{field}: "), error.message


def test_the_ends_of_every_range_are_accepted():
    request = parse_recommendation_request(json.dumps({
        "k": MAX_K, "context": {"time": MAX_EPOCH_S},
        "recent_items": [{"item": "a", "age_days": 0}, {"item": "b", "age_days": MAX_AGE_DAYS}, "c"]}).encode(),
        MAX_K, 10)
    assert request.k == MAX_K and request.at == MAX_EPOCH_S
    assert request.recent_ages_days[:2] == (0.0, float(MAX_AGE_DAYS))
    assert parse_recommendation_request(b'{"k": 1, "context": {"time": 0}}', MAX_K, 10).at == 0.0


@pytest.mark.parametrize("k", ["\u00b2", "\u0663", "0", "101", "1e3", "-1", ""])
def test_the_anonymous_k_is_an_ascii_integer_in_range(k):
    # "²" and "٣" pass str.isdigit() and then failed int(): a 500 before.
    with pytest.raises(RequestError) as caught:
        parse_anonymous_query({"k": [k]}, MAX_K, 10)
    assert (caught.value.status, caught.value.message.split(":")[0]) == (422, "k")


def test_the_openapi_document_states_the_ranges():
    request = build_openapi(MAX_K, 10, 20)["components"]["schemas"]["RecommendationRequest"]["properties"]
    age = request["recent_items"]["items"]["oneOf"][1]["properties"]["age_days"]
    assert (age["minimum"], age["maximum"]) == (0, MAX_AGE_DAYS)
    epoch = request["context"]["properties"]["time"]["oneOf"][1]
    assert (epoch["minimum"], epoch["maximum"]) == (0, MAX_EPOCH_S)
    assert (request["k"]["minimum"], request["k"]["maximum"]) == (1, MAX_K)


# ------------------------------------------------------------------ a real edge


@pytest.fixture(scope="module")
def edge(module_cluster, catalog_skus):
    module_cluster.publish()
    for sku in catalog_skus[:10]:
        module_cluster.put_offer(make_offer(f"GB-{sku}", sku))
    return module_cluster.start_edge("GB")


def test_out_of_range_numbers_get_a_422_that_names_the_field(edge, catalog_skus):
    for body, field in ((b'{"recent_items": [{"item": "%s", "age_days": 1e308}]}' % catalog_skus[0].encode(),
                         "recent_items[0].age_days"),
                        (b'{"context": {"time": 1e300}}', "context.time")):
        status, headers, raw = http_call(edge.url, "POST", "/v1/recommendations", body,
                                         {"Content-Type": "application/json"})
        assert status == 422 and headers["content-type"] == "application/json", raw
        error = json.loads(raw)["error"]
        assert error["code"] == "invalid_request" and error["message"].startswith(field + ":"), error
    status, _, raw = http_call(edge.url, "GET", "/v1/recommendations?k=%C2%B2")
    assert status == 422 and json.loads(raw)["error"]["message"].startswith("k:")
