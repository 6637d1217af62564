from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime
import pytest

from models.bundle import PROFILE_INPUTS, ROW_INPUTS, SLOT_INPUTS
from models.data import read_transactions
from models.encoding import RecentEvents, batch_event_slots, few_events_context, many_events_context
from models.export import build_ranking_graph
from models.features import ProfileSlots, RankingModel
from models.feeds import ragged_slots
from models.profile import DAY_SECONDS, build
from models.runtime import Ranker, RequestContext
from models.train import TrainingConfig, fit_ranking_model


def run_one(session: onnxruntime.InferenceSession, feeds: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """One request through the batched graph: its [P] and [N] inputs as a batch of one row (for a ragged graph, all
    P slots with slot_rows 0)."""
    if session.get_inputs()[0].name == SLOT_INPUTS[0]:
        feeds = {dict(zip(PROFILE_INPUTS, SLOT_INPUTS)).get(name, name): value for name, value in feeds.items()}
        feeds["slot_rows"] = np.zeros(len(feeds["slot_items"]), dtype=np.int64)
    scores, positions = session.run(
        None, {name: value[None, :] if name in ROW_INPUTS else value for name, value in feeds.items()}
    )
    assert scores.shape[0] == positions.shape[0] == 1
    return scores[0], positions[0]


def slot_feeds(context: RequestContext, region: int, candidates: np.ndarray, penalty: np.ndarray, k: int) -> dict:
    arrays = (context.items, context.counts, context.ages_days, context.days_since_first, context.decayed)
    return {
        **dict(zip(PROFILE_INPUTS, arrays)),
        "region": np.array([region], dtype=np.int64),
        "candidates": candidates.astype(np.int64),
        "penalty": penalty,
        "k": np.array([k], dtype=np.int64),
    }


def random_slots(rng: np.random.Generator, width: int, item_count: int) -> RequestContext:
    items = rng.integers(0, item_count + 1, width)
    items[: rng.integers(0, width)] = 0  # left padding
    counts = rng.integers(1, 30, width).astype(np.float32)
    since_last = rng.exponential(60.0, width).astype(np.float32)
    since_first = (since_last + rng.exponential(120.0, width) * (counts > 1)).astype(np.float32)
    decayed = (counts * rng.uniform(0.1, 1.0, width)).astype(np.float32)
    return RequestContext(items, since_last, None, counts, since_first, decayed)


def reference_slots(context: RequestContext) -> ProfileSlots:
    return ProfileSlots(
        context.items[None, :],
        *(
            np.asarray(a, np.float64)[None, :]
            for a in (context.counts, context.ages_days, context.days_since_first, context.decayed)
        ),
    )


@pytest.fixture(scope="module")
def ranker(bundle_dir: Path) -> Ranker:
    return Ranker.load(bundle_dir)


@pytest.fixture(scope="module")
def trained_model(synthetic_csv: Path) -> RankingModel:
    return fit_ranking_model(read_transactions(synthetic_csv), TrainingConfig()).model


@pytest.mark.parametrize("ragged", [True, False], ids=["ragged", "padded"])
def test_onnx_graph_matches_numpy_reference_on_random_profiles(trained_model: RankingModel, ragged: bool) -> None:
    session = onnxruntime.InferenceSession(build_ranking_graph(trained_model, ragged).SerializeToString())
    rng = np.random.default_rng(123)
    item_count = len(trained_model.statistics.vocabulary.items)
    region_count = len(trained_model.statistics.vocabulary.regions)
    for trial in range(30):
        context = random_slots(rng, trained_model.slots, item_count)
        candidates = rng.integers(0, item_count + 1, int(rng.integers(1, 1500)))
        candidates[0] = 0  # the unknown item is a legal candidate
        candidates[1:4] = context.items[-3:]  # repeats
        penalty = np.where(rng.random(len(candidates)) < 0.1, -np.inf, 0.0).astype(np.float32)
        region = int(rng.integers(0, region_count + 1))
        expected = trained_model.score_candidates(reference_slots(context), region, candidates) + penalty
        scores, positions = run_one(session, slot_feeds(context, region, candidates, penalty, len(candidates)))
        # Compare score by position, so float32 rounding between near-ties cannot flip the test.
        np.testing.assert_allclose(scores, expected[positions], rtol=0, atol=1e-4)
        np.testing.assert_allclose(np.sort(scores)[::-1], np.sort(expected)[::-1], rtol=0, atol=1e-4)
        assert sorted(positions.tolist()) == list(range(len(candidates)))


def test_padding_and_unknown_items_never_count_as_repeats(ranker: Ranker) -> None:
    empty = np.zeros(ranker.context_length, dtype=np.int64)
    candidates = np.array([0, 1, 2], dtype=np.int64)
    penalty = np.zeros(3, dtype=np.float32)
    empty_scores, empty_positions = ranker.rank(empty, 0, candidates, penalty, 3)
    unknown_score = empty_scores[list(empty_positions).index(0)]
    with_profile = ranker.encode_context(ranker.manifest["items"][:10] + ["NOT-A-SKU"])
    assert with_profile.width == 10
    scores, positions = ranker.rank(with_profile, 0, candidates, penalty, 3)
    assert scores[list(positions).index(0)] == pytest.approx(unknown_score, abs=1e-6)
    # Stats on a padding slot (item 0) are ignored by the graph.
    noisy = RequestContext(
        with_profile.items,
        with_profile.ages_days + 5,
        None,
        with_profile.counts + 3,
        with_profile.days_since_first + 9,
        with_profile.decayed + 2,
    )
    padded_scores = ranker.rank(noisy, 0, candidates, penalty, 3)[0]
    assert padded_scores[list(positions).index(0)] == pytest.approx(unknown_score, abs=1e-6)


def test_minus_infinity_penalty_puts_excluded_candidates_last(ranker: Ranker) -> None:
    context = ranker.encode_context(ranker.manifest["items"][:20])
    candidates = ranker.item_indices(ranker.manifest["items"][:50])
    open_scores, open_positions = ranker.rank(
        context, ranker.region_index("GB"), candidates, np.zeros(50, np.float32), 5
    )
    penalty = np.zeros(50, dtype=np.float32)
    penalty[open_positions] = -np.inf
    scores, positions = ranker.rank(context, ranker.region_index("GB"), candidates, penalty, 10)
    assert not set(positions.tolist()) & set(open_positions.tolist())
    assert np.isfinite(scores).all() and np.all(np.diff(scores) <= 0)


def test_k_larger_than_candidates_returns_all_candidates_sorted(ranker: Ranker) -> None:
    candidates = ranker.item_indices(ranker.manifest["items"][:7])
    penalty = np.zeros(7, dtype=np.float32)
    penalty[3] = -np.inf
    scores, positions = ranker.rank(ranker.encode_context([]), 1, candidates, penalty, 100)
    assert scores.dtype == np.float32 and positions.dtype == np.int64
    assert sorted(positions.tolist()) == list(range(7))
    assert positions[-1] == 3 and scores[-1] == -np.inf
    empty_scores, empty_positions = ranker.rank(ranker.encode_context([]), 1, candidates[:0], penalty[:0], 10)
    assert len(empty_scores) == len(empty_positions) == 0


def test_recent_items_are_summarised_per_item_as_a_profile_of_those_events(ranker: Ranker) -> None:
    items = ranker.manifest["items"]
    assert ranker.item_index(items[4].lower()) == 5
    assert ranker.item_index("NO-SUCH") == 0 and ranker.region_index("XX") == 0
    assert ranker.region_index("gb") == ranker.manifest["regions"].index("GB") + 1
    context = ranker.encode_context([items[0], "NO-SUCH", items[2], items[0]], ages_days=[30.0, 20.0, 10.0, 5.0])
    assert context.items.dtype == np.int64 and context.items.shape == (ranker.context_length,)
    assert context.width == 2 and not context.items[:-2].any()
    slot = {int(item): position for position, item in enumerate(context.items) if item}
    assert context.counts[slot[1]] == 2 and context.counts[slot[3]] == 1
    assert context.ages_days[slot[1]] == 5.0 and context.days_since_first[slot[1]] == 30.0
    assert context.decayed[slot[1]] == pytest.approx(np.exp(-30 / 180) + np.exp(-5 / 180), rel=1e-6)
    assert context.items[-1] == 1  # the strongest item sits last
    many = [items[i % len(items)] for i in range(ranker.context_length + 40)]
    assert ranker.encode_context(many).width == min(ranker.context_length, len(set(many)))


def test_missing_ages_take_the_manifest_defaults_and_sent_ages_are_kept(ranker: Ranker) -> None:
    items = ranker.manifest["items"][:3]
    defaults = np.asarray(ranker.manifest["default_ages_days"], dtype=np.float32)
    unaged = ranker.encode_context(items)
    assert unaged.ages_days.dtype == np.float32
    assert sorted(unaged.ages_days[-3:].tolist()) == sorted(defaults[-3:].tolist())
    aged = ranker.encode_context(items, ages_days=(40.0, float("nan"), 2.5))
    assert sorted(aged.ages_days[-3:].tolist()) == sorted([40.0, float(defaults[-2]), 2.5])
    with pytest.raises(ValueError, match="ages_days"):
        ranker.encode_context(items, ages_days=(1.0,))


def test_short_and_long_event_lists_are_summarised_alike(ranker: Ranker) -> None:
    """Requests of few events take a plain-Python path, longer ones numpy: both give the same slots."""
    rng = np.random.default_rng(8)
    for count in (0, 1, 5, 40, 300):
        items = rng.integers(0, 30, count).astype(np.int64)
        ages = rng.uniform(0, 200, count).astype(np.float32)
        few = few_events_context(items.tolist(), ages.tolist(), ranker.context_length)
        many = many_events_context(items, ages, ranker.context_length)
        assert few.width == many.width and np.array_equal(few.items, many.items)
        for name in ("counts", "ages_days", "days_since_first", "decayed"):
            np.testing.assert_allclose(getattr(few, name), getattr(many, name), rtol=1e-6)
    skus = [ranker.manifest["items"][i] for i in rng.integers(0, 30, 40)] + ["NO-SUCH"]
    ages = [float("nan") if i % 3 == 0 else float(i) for i in range(len(skus))]
    for sent in (None, ages):
        short = ranker.encode_context(skus, ages_days=sent)
        long = many_events_context(ranker.item_indices(skus), ranker._event_ages(skus, sent), ranker.context_length)
        assert np.array_equal(short.items, long.items) and np.allclose(short.ages_days, long.ages_days)
        assert np.allclose(short.days_since_first, long.days_since_first) and np.allclose(short.decayed, long.decayed)


def random_events(rng: np.random.Generator, items: list[str]) -> tuple[list[str], list[float] | None]:
    """A request's recent items as shoppers send them: none to hundreds, repeats, unknown and lower-case codes,
    and ages that are sometimes missing, NaN or negative (the default then)."""
    count = int(rng.choice([0, 1, 3, 20, 64, 65, 300]))
    skus = [items[i] if i < len(items) else "NO-SUCH" for i in rng.integers(0, len(items) + 3, count)]
    skus = [sku.lower() if rng.random() < 0.1 else sku for sku in skus]
    if rng.random() < 0.5:
        return skus, None
    ages = rng.uniform(-5, 300, count)
    ages[rng.random(count) < 0.1] = np.nan
    return skus, ages.tolist()


def test_a_batch_summarises_its_events_as_each_request_would_alone(ranker: Ranker) -> None:
    """request_context leaves the summary to the batch (one vectorised pass): the same slots, in the same order, as
    encode_context gives request by request, for the graph's width and for a narrow one that cuts items off."""
    rng = np.random.default_rng(21)
    items = ranker.manifest["items"]
    defaults = np.asarray(ranker.manifest["default_ages_days"], dtype=np.float32)
    edge_cases: list[list[tuple[list[str], list[float] | None]]] = [[([], None)], [(["NO-SUCH"], None), ([], None)]]
    for sent in edge_cases + [[random_events(rng, items) for _ in range(int(rng.integers(1, 14)))] for _ in range(40)]:
        shape = (defaults, ranker.context_length, len(items) + 1)
        alone = ragged_slots([ranker.encode_context(s, ages_days=a) for s, a in sent], *shape)
        together = ragged_slots([ranker.request_context(s, ages_days=a) for s, a in sent], *shape)
        assert together.keys() == alone.keys()
        for name in ("slot_items", "slot_rows", "slot_counts"):
            assert np.array_equal(together[name], alone[name]), name
        for name in SLOT_INPUTS[2:]:
            np.testing.assert_allclose(together[name], alone[name], rtol=1e-6, err_msg=name)
        events = [ranker.request_context(s, ages_days=a) for s, a in sent]
        assert all(isinstance(e, RecentEvents) for e in events)
        narrow = batch_event_slots(events, defaults, 3, len(items) + 1)  # type: ignore[arg-type]
        for row, event in enumerate(events):
            assert isinstance(event, RecentEvents)
            ages = event.ages_days if event.ages_days is not None else ranker._event_ages(sent[row][0], None)
            own = many_events_context(np.asarray(event.items, dtype=np.int64), ages, 3)
            mine = narrow["slot_rows"] == row
            assert np.array_equal(narrow["slot_items"][mine], own.items[3 - own.width :])
            np.testing.assert_allclose(narrow["slot_decayed"][mine], own.decayed[3 - own.width :], rtol=1e-6)


def test_a_batch_mixing_sent_events_and_profiles_ranks_each_as_alone(ranker: Ranker) -> None:
    rng = np.random.default_rng(5)
    items = ranker.manifest["items"]
    candidates = ranker.item_indices(items[:120])
    penalty = np.where(rng.random(len(candidates)) < 0.1, -np.inf, 0.0).astype(np.float32)
    now = 1_320_000_000.0
    requests = []
    for row in range(10):
        skus, ages = random_events(rng, items)
        if row % 3 == 0:
            profile = build((sku, now - row * DAY_SECONDS) for sku in skus)
            context = ranker.encode_profile(profile, now)
        else:
            context = ranker.request_context(skus, ages_days=ages)  # type: ignore[assignment]
        requests.append((context, 1 + row % 2, candidates, penalty))
    for (context, region, _, _), (scores, positions) in zip(requests, ranker.rank_many(requests, 10)):
        alone_scores, alone_positions = ranker.rank(context, region, candidates, penalty, 10)
        np.testing.assert_allclose(scores, alone_scores, rtol=0, atol=1e-5)
        assert np.array_equal(candidates[positions], candidates[alone_positions])


def test_a_profile_ranks_as_the_request_that_sends_the_same_events(ranker: Ranker) -> None:
    """The edge's two paths agree: a stored profile (models/profile.py) and the same events as recent_items."""
    rng = np.random.default_rng(3)
    items = ranker.manifest["items"]
    now = 1_320_000_000.0
    skus = [items[i] for i in rng.integers(0, 60, 80)]
    ages = np.sort(rng.uniform(0, 300, 80))[::-1]
    profile = build(zip(skus, (now - ages * DAY_SECONDS).tolist()))
    candidates = ranker.item_indices(items[:200])
    penalty = np.zeros(len(candidates), dtype=np.float32)
    from_profile = ranker.rank_profiles([(profile, 1, candidates, penalty)], now, 10)[0]
    from_request = ranker.rank(ranker.encode_context(skus, ages_days=ages.tolist()), 1, candidates, penalty, 10)
    np.testing.assert_allclose(from_profile[0], from_request[0], rtol=0, atol=1e-4)
    assert np.array_equal(from_profile[1], from_request[1])


def test_bare_item_array_ranks_like_the_same_events_without_ages(ranker: Ranker) -> None:
    skus = ranker.manifest["items"][:20]
    candidates = ranker.item_indices(ranker.manifest["items"][:60])
    penalty = np.zeros(60, dtype=np.float32)
    region = ranker.region_index("GB")
    bare = ranker.rank(ranker.item_indices(skus), region, candidates, penalty, 10)
    encoded = ranker.rank(ranker.encode_context(skus), region, candidates, penalty, 10)
    assert np.array_equal(bare[1], encoded[1]) and np.array_equal(bare[0], encoded[0])


@pytest.mark.parametrize("ragged", [True, False], ids=["ragged", "padded"])
def test_time_since_purchase_changes_scores_of_repeats_only(trained_model: RankingModel, ragged: bool) -> None:
    session = onnxruntime.InferenceSession(build_ranking_graph(trained_model, ragged).SerializeToString())
    width = trained_model.slots
    candidates = np.array([2, 7, 9], dtype=np.int64)

    def scores(age: float) -> np.ndarray:
        items = np.zeros(width, dtype=np.int64)
        items[-3:] = [1, 2, 3]
        counts = (items > 0).astype(np.float32) * 2
        context = RequestContext(
            items,
            np.full(width, age, np.float32),
            None,
            counts,
            np.full(width, age + 40, np.float32),
            counts * np.float32(np.exp(-age / 180)),
        )
        values, positions = run_one(session, slot_feeds(context, 0, candidates, np.zeros(3, np.float32), 3))
        return values[np.argsort(positions)]

    fresh, old = scores(1.0), scores(300.0)
    assert fresh[0] != pytest.approx(old[0], abs=1e-6)  # item 2 is in the profile: its age matters
    np.testing.assert_allclose(fresh[1:], old[1:], atol=1e-5)  # new items do not depend on ages


def test_recent_repeat_raises_an_items_rank(ranker: Ranker) -> None:
    candidates = ranker.item_indices(ranker.manifest["items"])
    penalty = np.zeros(len(candidates), dtype=np.float32)
    _, cold_positions = ranker.rank(ranker.encode_context([]), 1, candidates, penalty, len(candidates))
    least_liked = ranker.manifest["items"][int(cold_positions[-1])]
    _, positions = ranker.rank(ranker.encode_context([least_liked] * 3), 1, candidates, penalty, 10)
    assert ranker.manifest["items"][int(positions[0])] == least_liked


def test_model_beats_global_popularity_on_held_out_synthetic_users(bundle_dir: Path) -> None:
    metrics = Ranker.load(bundle_dir).manifest["training"]["metrics"]
    assert metrics["model"]["ndcg@10"] > metrics["popularity"]["ndcg@10"] + 0.03
    assert metrics["model"]["recall@10"] > metrics["popularity"]["recall@10"] + 0.03


def test_new_items_that_neighbour_the_profile_outrank_the_same_items_without_it(
    ranker: Ranker, trained_model: RankingModel
) -> None:
    stats = trained_model.statistics
    anchor = int(np.argmax(stats.neighbour_weights[:, 0]))
    neighbour = int(stats.neighbours[anchor, 0])
    items = ranker.manifest["items"]
    candidates = np.array([neighbour], dtype=np.int64)
    penalty = np.zeros(1, dtype=np.float32)
    alone = ranker.rank(ranker.encode_context([]), 0, candidates, penalty, 1)[0][0]
    with_anchor = ranker.rank(ranker.encode_context([items[anchor - 1]]), 0, candidates, penalty, 1)[0][0]
    assert with_anchor > alone


def test_a_batch_ranks_each_request_as_it_would_alone(ranker: Ranker) -> None:
    """Shoppers are ranked in batches: regions, contexts, candidate counts (padded) and penalties all differ per row,
    in batches of few and of many candidates, as the edge sends them."""
    rng = np.random.default_rng(11)
    items = ranker.manifest["items"]
    for count_range in ((1, 300), (401, 600)):
        requests = []
        for row in range(9):
            context = ranker.encode_context([items[i] for i in rng.integers(0, len(items), int(rng.integers(0, 60)))])
            candidates = ranker.item_indices(
                [items[i] for i in rng.integers(0, len(items), int(rng.integers(*count_range)))]
            )
            penalty = np.where(rng.random(len(candidates)) < 0.2, -np.inf, 0.0).astype(np.float32)
            requests.append((context, int(rng.integers(0, len(ranker.manifest["regions"]) + 1)), candidates, penalty))
        for k in (1, 10, 500):
            batch = ranker.rank_many(requests, k)
            assert len(batch) == len(requests)
            for (context, region, candidates, penalty), (scores, positions) in zip(requests, batch):
                alone_scores, alone_positions = ranker.rank(context, region, candidates, penalty, k)
                finite = np.isfinite(alone_scores)
                assert positions.max(initial=0) < len(candidates)
                np.testing.assert_allclose(scores[: finite.sum()], alone_scores[finite], rtol=0, atol=1e-5)
                # A duplicated candidate ties with itself, and ORT's TopK may order such ties either way: compare items.
                assert np.array_equal(candidates[positions[: finite.sum()]], candidates[alone_positions[finite]])
                assert not np.isfinite(scores[finite.sum() :]).any() and len(scores) <= len(alone_scores)


def test_a_profile_cut_to_its_filled_slots_scores_as_the_full_width_profile(ranker: Ranker) -> None:
    """The ranker sends only the filled slots; the answer is the one of all P slots."""
    assert ranker.ragged and ranker.trims_context
    rng = np.random.default_rng(5)
    items = ranker.manifest["items"]
    length = ranker.context_length
    candidates = ranker.item_indices(items[:150])
    penalty = np.zeros(len(candidates), dtype=np.float32)
    for events in (0, 1, 7, 300):
        context = ranker.encode_context(
            [items[i] for i in rng.integers(0, len(items), events)], ages_days=list(rng.uniform(0, 90, events))
        )
        full = run_one(ranker._session, slot_feeds(context, 1, candidates, penalty, 20))
        scores, positions = ranker.rank(context, 1, candidates, penalty, 20)
        np.testing.assert_allclose(scores, full[0], rtol=0, atol=1e-6)
        assert np.array_equal(positions, full[1])
        assert ranker.context_width([context]) == max(context.width or 0, 1)  # filled slots are the last ones
        unknown = RequestContext(
            context.items, context.ages_days, None, context.counts, context.days_since_first, context.decayed
        )  # built by hand: its width is not known
        assert ranker.context_width([context, unknown]) == length
