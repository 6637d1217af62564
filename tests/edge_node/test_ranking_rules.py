"""Business rules and fallbacks on a real EdgeState with a real ONNX ranker (in process, no server)."""

from __future__ import annotations

import asyncio
import dataclasses

import msgspec
import numpy as np
import orjson
import pytest
from prometheus_client import CollectorRegistry, Histogram

from edge_node.batching import FALLBACK_LATENCY_BUDGET, FALLBACK_MODEL_ERROR, InferenceBatcher, ModelBreaker
from edge_node.cdn import CdnPolicy
from edge_node.rules import Rules
from edge_node.serving import candidates, rank, render, resolve_region, score, shopper_context
from edge_node.state import EdgeState
from edge_node.validation import RequestError, parse_recommendation_request
from models.runtime import Ranker
from origin_sync.replica import Replica
from origin_sync.wire.offers import validate_offer
from tests.conftest import make_offer


@pytest.fixture(scope="module")
def ranker(bundle_dir):
    return Ranker.load(bundle_dir)


def _state(ranker, offers) -> EdgeState:
    replica = Replica(version=7, regions=("GB",), offers={o["id"]: validate_offer(o) for o in offers}, model=None)
    return EdgeState.build(replica, ranker)


def _ask(state, body: bytes, rules: Rules = Rules(), breaker: ModelBreaker | None = None):
    """The walk of edge_node.serving, step by step, as the endpoint runs it."""
    breaker = breaker or ModelBreaker(rules.model_budget_ms, rules.breaker_cooldown_s)
    registry = CollectorRegistry()
    batcher = InferenceBatcher(
        breaker, Histogram("run_seconds", "", registry=registry), Histogram("batch_size", "", registry=registry)
    )
    request = parse_recommendation_request(body, 100, 10, state.context_length)
    region = resolve_region(request.region, None, state, CdnPolicy())
    context = shopper_context(request)
    chosen = candidates(state, region, request, context, rules)
    return rank(chosen, asyncio.run(score(chosen, context, batcher)))


def _body(answer) -> dict:
    return orjson.loads(render(answer, None))


def _ids(answer) -> list[str]:
    return [o["offer_id"] for o in _body(answer)["offers"]]


def test_a_campaign_boost_set_at_the_origin_lifts_an_offer_to_the_top(ranker, catalog_skus):
    offers = [make_offer(f"GB-{s}", s) for s in catalog_skus[:20]]
    plain = _ids(_ask(_state(ranker, offers), b'{"k": 20}'))
    last = plain[-1]
    boosted = [dict(o, boost=50.0) if o["id"] == last else o for o in offers]
    assert _ids(_ask(_state(ranker, boosted), b'{"k": 20}'))[0] == last


def test_diversity_keeps_at_most_n_offers_of_a_product_group(ranker, catalog_skus):
    offers = [make_offer(f"GB-{s}", s, group=f"g{i % 3}") for i, s in enumerate(catalog_skus[:30])]
    state = _state(ranker, offers)
    groups = {o["id"]: o["group"] for o in offers}
    unlimited = _ids(_ask(state, b'{"k": 10}'))
    assert max(sum(groups[i] == g for i in unlimited) for g in ("g0", "g1", "g2")) > 2
    limited = _ids(_ask(state, b'{"k": 10}', Rules(max_per_group=2)))
    assert len(limited) == 6  # three groups, two each
    assert all(sum(groups[i] == g for i in limited) <= 2 for g in ("g0", "g1", "g2"))


def test_items_the_shopper_just_bought_are_excluded_older_ones_are_not(ranker, catalog_skus):
    offers = [make_offer(f"GB-{s}", s) for s in catalog_skus[:20]]
    state = _state(ranker, offers)
    sku = catalog_skus[3]
    just = _ids(_ask(state, f'{{"k": 20, "recent_items": [{{"item": "{sku}", "age_days": 0.2}}]}}'.encode()))
    older = _ids(_ask(state, f'{{"k": 20, "recent_items": [{{"item": "{sku}", "age_days": 9}}]}}'.encode()))
    assert f"GB-{sku}" not in just and f"GB-{sku}" in older


def test_a_failing_model_answers_from_regional_popularity_with_the_rules_applied(ranker, catalog_skus):
    offers = [make_offer(f"GB-{s}", s) for s in catalog_skus[:20]]
    offers[0]["stock"] = 0
    state = _state(ranker, offers)
    expected = _ids(_ask(state, b'{"k": 5}'))  # with no history the model ranks by its popularity prior
    catalog = state.catalogs["GB"]
    # An item index beyond the model's vocabulary makes onnxruntime's Gather fail: a real model error.
    broken = dataclasses.replace(catalog, candidates=np.full_like(catalog.candidates, 10**6))
    state = dataclasses.replace(state, catalogs={"GB": broken})
    ranked = _ask(state, b'{"k": 5}')
    assert ranked.fallback == _body(ranked)["fallback"] == FALLBACK_MODEL_ERROR
    assert _ids(ranked) == expected and f"GB-{catalog_skus[0]}" not in _ids(ranked)


def test_a_model_over_its_latency_budget_sends_the_next_answers_to_the_fallback(ranker, catalog_skus):
    state = _state(ranker, [make_offer(f"GB-{s}", s) for s in catalog_skus[:20]])
    rules = Rules(model_budget_ms=1e-6, breaker_cooldown_s=60)
    breaker = ModelBreaker(rules.model_budget_ms, rules.breaker_cooldown_s)
    first = _ask(state, b'{"k": 5}', rules, breaker)
    second = _ask(state, b'{"k": 5}', rules, breaker)
    assert first.fallback is None and second.fallback == FALLBACK_LATENCY_BUDGET
    assert len(_body(second)["offers"]) == 5


def test_more_recent_items_than_the_model_context_length_are_refused(ranker, catalog_skus):
    state = _state(ranker, [make_offer("GB-1", catalog_skus[0])])
    too_many = ('{"recent_items": [%s]}' % ",".join(['"1"'] * (ranker.context_length + 1))).encode()
    with pytest.raises(RequestError) as info:
        _ask(state, too_many)
    assert info.value.status == 422 and str(ranker.context_length) in info.value.message


def test_the_answer_is_json_with_each_offers_fields_and_its_score_to_six_decimals(ranker, catalog_skus):
    offers = [make_offer(f"GB-{s}", s, title=f'Mug "{s}" – blue') for s in catalog_skus[:5]]
    ranked = _ask(_state(ranker, offers), b'{"k": 5}')
    ranked = msgspec.structs.replace(ranked, scores=[1.5, -0.12345678, 3e-9, float("nan"), float("inf")])
    body = orjson.loads(render(ranked, "r-1"))
    assert [o["score"] for o in body["offers"]] == [1.5, -0.123457, 0.0, None, None]
    by_id = {o["id"]: o for o in offers}
    for offer in body["offers"]:
        source = by_id[offer["offer_id"]]
        assert (offer["sku"], offer["title"], offer["price"], offer["currency"]) == (
            source["sku"],
            source["title"],
            source["price"],
            source["currency"],
        )
    assert body["request_id"] == "r-1" and body["region"] == "GB" and body["fallback"] is None
    ranked = msgspec.structs.replace(ranked, scores=[], positions=[])
    assert orjson.loads(render(ranked, "r-2"))["offers"] == []
