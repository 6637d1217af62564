"""Shoppers ranked together in one ONNX run (edge_node.batching), in process, on a real EdgeState and ranker."""

from __future__ import annotations

import asyncio
import dataclasses

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, Histogram

from edge_node.batching import FALLBACK_MODEL_ERROR, InferenceBatcher, ModelBreaker, ScoreRequest
from edge_node.rules import Rules
from edge_node.serving import candidates, rank, score, shopper_context
from edge_node.state import EdgeState
from edge_node.validation import parse_recommendation_request
from models.runtime import Ranker
from origin_sync.replica import Replica
from origin_sync.wire.offers import validate_offer
from tests.conftest import make_offer

RULES = Rules(max_per_group=2)


@pytest.fixture(scope="module")
def ranker(bundle_dir):
    return Ranker.load(bundle_dir)


@pytest.fixture(scope="module")
def state(ranker, catalog_skus) -> EdgeState:
    # Three regions with different offer counts (so batches are padded), product groups (diversity) and stock.
    offers = [make_offer(f"GB-{s}", s, group=f"g{i % 4}", stock=i % 7) for i, s in enumerate(catalog_skus[:60])]
    offers += [make_offer(f"DE-{s}", s, region="DE") for s in catalog_skus[10:35]]
    offers += [make_offer(f"FR-{s}", s, region="FR") for s in catalog_skus[5:8]]
    replica = Replica(
        version=3, regions=("GB", "DE", "FR"), offers={o["id"]: validate_offer(o) for o in offers}, model=None
    )
    return EdgeState.build(replica, ranker)


def _histograms() -> tuple[CollectorRegistry, Histogram, Histogram]:
    registry = CollectorRegistry()
    return (
        registry,
        Histogram("run_seconds", "", registry=registry),
        Histogram("batch_size", "", buckets=(1, 2, 4, 8, 16, 32, 64), registry=registry),
    )


def _bodies(catalog_skus: list[str], count: int) -> list[bytes]:
    rng = np.random.default_rng(4)
    bodies = []
    for number in range(count):
        items = ", ".join(
            f'{{"item": "{catalog_skus[i]}", "age_days": {age:.1f}}}'
            for i, age in zip(rng.integers(0, 80, int(rng.integers(0, 30))), rng.uniform(0, 200, 30))
        )
        exclude = f'"{catalog_skus[int(rng.integers(0, 60))]}"'
        bodies.append(
            f'{{"region": "{("GB", "DE", "FR")[number % 3]}", "k": {1 + number % 9}, '
            f'"recent_items": [{items}], "exclude": [{exclude}]}}'.encode()
        )
    return bodies


async def _walk(batcher: InferenceBatcher, state: EdgeState, body: bytes):
    """The walk of edge_node.serving from the parsed request on (each body names its region)."""
    request = parse_recommendation_request(body, 100, 10, state.context_length)
    context = shopper_context(request)
    chosen = candidates(state, request.region, request, context, RULES)
    return rank(chosen, await score(chosen, context, batcher))


async def _concurrently(batcher: InferenceBatcher, state: EdgeState, bodies: list[bytes]):
    return await asyncio.gather(*(_walk(batcher, state, body) for body in bodies))


def test_requests_ready_together_share_a_run_and_get_the_answers_they_get_alone(state, catalog_skus):
    bodies = _bodies(catalog_skus, 24)
    breaker = ModelBreaker(RULES.model_budget_ms, RULES.breaker_cooldown_s)
    single_batcher = InferenceBatcher(breaker, *_histograms()[1:])
    alone = [asyncio.run(_walk(single_batcher, state, body)) for body in bodies]
    registry, run_seconds, batch_sizes = _histograms()
    batcher = InferenceBatcher(breaker, run_seconds, batch_sizes, max_batch=16)
    together = asyncio.run(_concurrently(batcher, state, bodies))
    for single, batched in zip(alone, together):
        assert batched.fallback is None and batched.fields() == single.fields()
        assert batched.positions == single.positions
        np.testing.assert_allclose(batched.scores, single.scores, rtol=0, atol=1e-5)
    # All 24 were ready in one pass of the loop: one flush, in two runs (16 + 8) since at most 16 share one.
    assert registry.get_sample_value("batch_size_count") == 2 and registry.get_sample_value("batch_size_sum") == 24
    assert registry.get_sample_value("batch_size_bucket", {"le": "8.0"}) == 1
    assert registry.get_sample_value("run_seconds_count") == 2


async def _staggered(batcher: InferenceBatcher, state: EdgeState, bodies: list[bytes], passes_apart: int):
    """The requests' walks started `passes_apart` passes of the event loop after one another."""
    walks = []
    for body in bodies:
        walks.append(asyncio.ensure_future(_walk(batcher, state, body)))
        for _ in range(passes_apart):
            await asyncio.sleep(0)
    return await asyncio.gather(*walks)


@pytest.mark.parametrize(
    ("passes_apart", "max_passes", "runs"),
    [
        (1, 4, 1),  # each pass brings one more: all four gather into one run
        (1, 2, 2),  # ... but a batch waits max_passes passes at most
        (3, 4, 4),  # a pass that brings nothing ends the wait: requests further apart run alone
    ],
)
def test_a_batch_gathers_while_each_pass_brings_requests_and_no_longer(
    state, catalog_skus, passes_apart, max_passes, runs
):
    registry, run_seconds, batch_sizes = _histograms()
    breaker = ModelBreaker(RULES.model_budget_ms, RULES.breaker_cooldown_s)
    batcher = InferenceBatcher(breaker, run_seconds, batch_sizes, max_passes=max_passes)
    answers = asyncio.run(_staggered(batcher, state, _bodies(catalog_skus, 4), passes_apart))
    assert all(answer.fallback is None for answer in answers)
    assert registry.get_sample_value("batch_size_count") == runs and registry.get_sample_value("batch_size_sum") == 4


def test_a_request_the_model_fails_on_falls_back_alone_and_its_batch_is_served(state, catalog_skus):
    # An item index beyond the model's vocabulary makes onnxruntime's Gather fail: a real model error, in DE only.
    broken = dataclasses.replace(state.catalogs["DE"], candidates=np.full_like(state.catalogs["DE"].candidates, 10**6))
    damaged = dataclasses.replace(state, catalogs={**state.catalogs, "DE": broken})
    bodies = _bodies(catalog_skus, 9)
    breaker = ModelBreaker(RULES.model_budget_ms, RULES.breaker_cooldown_s)
    registry, run_seconds, batch_sizes = _histograms()
    answers = asyncio.run(_concurrently(InferenceBatcher(breaker, run_seconds, batch_sizes), damaged, bodies))
    regions = [a.region for a in answers]
    assert [a.fallback for a, r in zip(answers, regions) if r == "DE"] == [FALLBACK_MODEL_ERROR] * 3
    assert all(a.fallback is None for a, r in zip(answers, regions) if r != "DE")
    assert all(a.positions for a in answers)  # the fallback still answers, from regional popularity
    # The batch of 9 failed, then each request ran alone: 6 good runs of one were recorded.
    assert registry.get_sample_value("batch_size_count") == 6 and registry.get_sample_value("batch_size_sum") == 6


def test_a_flush_that_fails_outside_the_model_still_answers_every_waiter_with_the_fallback(state):
    # No breaker to record the run in: the flush fails after the model ran, outside its own error handling.
    batcher = InferenceBatcher(None, *_histograms()[1:])
    catalog = state.catalogs["GB"]

    async def main():
        request = ScoreRequest(
            state.model, state.model.encode_context([]), catalog.region_index, catalog.candidates, catalog.rules.base, 5
        )
        return await asyncio.wait_for(asyncio.gather(batcher.submit(request), batcher.submit(request)), 5)

    assert [scored.failure for scored in asyncio.run(main())] == [FALLBACK_MODEL_ERROR] * 2


def test_a_cancelled_request_leaves_the_others_of_its_batch_served(state, catalog_skus):
    breaker = ModelBreaker(RULES.model_budget_ms, RULES.breaker_cooldown_s)
    batcher = InferenceBatcher(breaker, *_histograms()[1:])

    async def main():
        tasks = [asyncio.ensure_future(_walk(batcher, state, body)) for body in _bodies(catalog_skus, 5)]
        await asyncio.sleep(0)  # every task has planned and is waiting on the batch
        tasks[2].cancel()  # a client gone, or a server shutting down past its grace period
        return await asyncio.gather(*tasks, return_exceptions=True)

    results = asyncio.run(main())
    assert isinstance(results[2], asyncio.CancelledError)
    assert all(r.fallback is None and r.positions for i, r in enumerate(results) if i != 2)
