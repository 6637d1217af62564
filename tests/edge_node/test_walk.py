"""The request walk of edge_node.serving, step by step, on a real EdgeState with a real ONNX ranker (in process):
where the region comes from, and that every step hands the next a value it cannot change."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import CollectorRegistry, Histogram

from edge_node.batching import InferenceBatcher, ModelBreaker
from edge_node.cdn import CdnPolicy
from edge_node.rules import Rules
from edge_node.serving import candidates, rank, resolve_region, score, shopper_context
from edge_node.state import EdgeState
from edge_node.validation import RequestError, parse_recommendation_request
from models.runtime import Ranker
from origin_sync.replica import Replica
from origin_sync.wire.offers import validate_offer
from tests.conftest import make_offer


@pytest.fixture(scope="module")
def ranker(bundle_dir):
    return Ranker.load(bundle_dir)


def _state(ranker, catalog_skus, regions: tuple[str, ...]) -> EdgeState:
    offers = [make_offer(f"{r}-{s}", s, region=r) for r in regions for s in catalog_skus[:10]]
    replica = Replica(version=5, regions=regions, offers={o["id"]: validate_offer(o) for o in offers}, model=None)
    return EdgeState.build(replica, ranker)


def test_the_region_is_the_requests_then_the_cdn_countrys_market_then_the_edges_only_one(ranker, catalog_skus):
    two = _state(ranker, catalog_skus, ("GB", "DE"))
    cdn = CdnPolicy(markets={"AT": "DE"})
    assert resolve_region("GB", "AT", two, cdn) == "GB"  # the request's own region wins over the CDN's country
    assert resolve_region(None, "AT", two, cdn) == "DE"  # the country's market
    assert resolve_region(None, "gb", two, cdn) == "GB"  # a country that is its own market
    with pytest.raises(RequestError) as required:
        resolve_region(None, None, two, cdn)
    assert (required.value.status, required.value.code) == (422, "region_required")
    for requested, country in (("FR", None), (None, "US")):
        with pytest.raises(RequestError) as unknown:
            resolve_region(requested, country, two, cdn)
        assert (unknown.value.status, unknown.value.code) == (404, "unknown_region")
        assert "DE, GB" in unknown.value.message
    assert resolve_region(None, None, _state(ranker, catalog_skus, ("FR",)), cdn) == "FR"


def test_every_step_hands_on_a_value_the_next_cannot_change(ranker, catalog_skus):
    state = _state(ranker, catalog_skus, ("GB",))
    request = parse_recommendation_request(
        f'{{"k": 3, "recent_items": [{{"item": "{catalog_skus[1]}", "age_days": 0.1}}]}}'.encode(),
        100,
        10,
        state.context_length,
    )
    region = resolve_region(request.region, None, state, CdnPolicy())
    context = shopper_context(request)
    chosen = candidates(state, region, request, context, Rules())
    registry = CollectorRegistry()
    batcher = InferenceBatcher(
        ModelBreaker(25, 5),
        Histogram("run_seconds", "", registry=registry),
        Histogram("batch_size", "", registry=registry),
    )
    scored = asyncio.run(score(chosen, context, batcher))
    answer = rank(chosen, scored)
    for value, field in (
        (request, "k"),
        (context, "items"),
        (chosen, "want"),
        (scored, "failure"),
        (answer, "fallback"),
    ):
        with pytest.raises(AttributeError):
            setattr(value, field, None)
    with pytest.raises(ValueError):
        chosen.mask[0] = 0.0  # the rule mask is read-only once the rules made it
    # The just-bought rule made it into the mask, and so out of the answer.
    assert f"GB-{catalog_skus[1]}" not in answer.offer_ids and len(answer.offer_ids) == 3
    assert answer.region == region == "GB" and answer.fallback is None


def test_a_version_that_changed_no_offer_reuses_the_catalogs_and_one_that_did_lays_them_out_again(
    ranker, catalog_skus, bundle_dir
):
    # A batch of profile changes moves the data version but keeps the replica's offers map: the edge must not lay
    # out every offer again for it (hundreds of ms at 100,000 offers, with the requests waiting on the interpreter).
    import dataclasses

    first = _state(ranker, catalog_skus, ("GB",))
    replica = Replica(version=5, regions=("GB",), offers=dict(_offers_of(catalog_skus)), model=None)
    built = EdgeState.build(replica, ranker)
    profiles_only = EdgeState.build(dataclasses.replace(replica, version=6), ranker, previous=built)
    assert profiles_only.data_version == 6 and profiles_only.catalogs is built.catalogs
    assert profiles_only.experiments is built.experiments
    changed = dict(replica.offers)
    changed.pop(next(iter(changed)))
    offers_changed = EdgeState.build(dataclasses.replace(replica, version=7, offers=changed), ranker, previous=built)
    assert offers_changed.catalogs is not built.catalogs and len(offers_changed.catalogs["GB"]) == 9
    other_model = EdgeState.build(dataclasses.replace(replica, version=8), Ranker.load(bundle_dir), previous=built)
    assert other_model.catalogs is not built.catalogs
    assert first.catalogs is not built.catalogs  # built without a previous state: laid out afresh


def _offers_of(catalog_skus):
    offers = [make_offer(f"GB-{s}", s, region="GB") for s in catalog_skus[:10]]
    return {o["id"]: validate_offer(o) for o in offers}
