"""Fuzz the edge's public API against its own OpenAPI document (schemathesis): no 5xx, and every answer,
error or not, is what the document says."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import make_offer


@pytest.fixture(scope="module")
def fuzzed_edge(module_cluster, catalog_skus):
    module_cluster.publish()
    for sku in catalog_skus[:30]:
        module_cluster.put_offer(make_offer(f"GB-{sku}", sku, group=f"g{len(sku) % 4}"))
    return module_cluster.start_edge("GB", args=["--max-per-group", "3"])


@pytest.fixture(scope="module")
def operations(fuzzed_edge):
    schema = schemathesis.openapi.from_url(f"{fuzzed_edge.url}/openapi.json")
    found = {}
    for result in schema.get_all_operations():
        operation = result.ok()
        found[f"{operation.method.upper()} {operation.path}"] = operation
    return found


@pytest.mark.parametrize(
    "name",
    [
        "POST /v1/recommendations",
        "GET /v1/recommendations",
        "POST /v1/events",
        "GET /healthz",
        "GET /readyz",
        "GET /metrics",
    ],
)
def test_the_api_never_answers_5xx_and_always_answers_as_documented(name, operations, fuzzed_edge):
    operation = operations[name]

    @given(data=st.data())
    @settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def fuzz(data):
        case = data.draw(operation.as_strategy())
        case.call_and_validate(base_url=fuzzed_edge.url)

    fuzz()
