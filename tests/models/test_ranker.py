from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime
import pytest

from models.bundle import ROW_INPUTS
from models.data import read_transactions
from models.export import build_ranking_graph
from models.features import RankingModel
from models.runtime import Ranker, RequestContext
from models.train import TrainingConfig, fit_ranking_model


def run_one(session: onnxruntime.InferenceSession, feeds: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """One request through the batched graph: its [L] and [N] inputs as a batch of one row."""
    scores, positions = session.run(None, {name: value[None, :] if name in ROW_INPUTS else value
                                           for name, value in feeds.items()})
    assert scores.shape[0] == positions.shape[0] == 1
    return scores[0], positions[0]


@pytest.fixture(scope="module")
def ranker(bundle_dir: Path) -> Ranker:
    return Ranker.load(bundle_dir)


@pytest.fixture(scope="module")
def trained_model(synthetic_csv: Path) -> RankingModel:
    return fit_ranking_model(read_transactions(synthetic_csv), TrainingConfig()).model


def test_onnx_graph_matches_numpy_reference_on_held_out_requests(trained_model: RankingModel) -> None:
    session = onnxruntime.InferenceSession(build_ranking_graph(trained_model).SerializeToString())
    rng = np.random.default_rng(123)
    item_count = len(trained_model.statistics.vocabulary.items)
    region_count = len(trained_model.statistics.vocabulary.regions)
    for trial in range(30):
        context = rng.integers(0, item_count + 1, trained_model.context_length)
        context[: rng.integers(0, trained_model.context_length)] = 0  # left padding
        context[-3:] = context[-1]  # repeats
        ages = np.sort(rng.exponential(90.0, trained_model.context_length))[::-1].astype(np.float32)
        ages[rng.random(len(ages)) < 0.05] = rng.uniform(0, 400)  # out of order ages are legal too
        candidates = rng.integers(0, item_count + 1, int(rng.integers(1, 500)))
        candidates[0] = 0  # the unknown item is a legal candidate
        penalty = np.where(rng.random(len(candidates)) < 0.1, -np.inf, 0.0).astype(np.float32)
        region = int(rng.integers(0, region_count + 1))
        expected = trained_model.score_candidates(context, ages.astype(np.float64), region, candidates) + penalty
        scores, positions = run_one(
            session,
            {
                "context_items": context.astype(np.int64),
                "context_ages_days": ages,
                "region": np.array([region], dtype=np.int64),
                "candidates": candidates.astype(np.int64),
                "penalty": penalty,
                "k": np.array([len(candidates)], dtype=np.int64),
            },
        )
        # Compare score by position, so float32 rounding between near-ties cannot flip the test.
        np.testing.assert_allclose(scores, expected[positions], rtol=0, atol=1e-5)
        np.testing.assert_allclose(np.sort(scores)[::-1], np.sort(expected)[::-1], rtol=0, atol=1e-5)
        assert sorted(positions.tolist()) == list(range(len(candidates)))


def test_padding_and_unknown_items_never_count_as_repeats(trained_model: RankingModel, ranker: Ranker) -> None:
    empty = np.zeros(ranker.context_length, dtype=np.int64)
    candidates = np.array([0, 1, 2], dtype=np.int64)
    penalty = np.zeros(3, dtype=np.float32)
    empty_scores, empty_positions = ranker.rank(empty, 0, candidates, penalty, 3)
    padded = empty.copy()
    padded[-1] = 0  # an unknown item in the context is encoded as 0, like padding
    assert np.array_equal(ranker.rank(padded, 0, candidates, penalty, 3)[0], empty_scores)
    unknown_score = empty_scores[list(empty_positions).index(0)]
    with_context = ranker.encode_context(ranker.manifest["items"][:10] + ["NOT-A-SKU"])
    scores, positions = ranker.rank(with_context, 0, candidates, penalty, 3)
    assert scores[list(positions).index(0)] == pytest.approx(unknown_score, abs=1e-6)


def test_minus_infinity_penalty_puts_excluded_candidates_last(ranker: Ranker) -> None:
    context = ranker.encode_context(ranker.manifest["items"][:20])
    candidates = ranker.item_indices(ranker.manifest["items"][:50])
    open_scores, open_positions = ranker.rank(context, ranker.region_index("GB"), candidates, np.zeros(50, np.float32), 5)
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


def test_encoding_keeps_last_items_left_padded_and_maps_unknowns_to_zero(ranker: Ranker) -> None:
    items = ranker.manifest["items"]
    assert ranker.item_index(items[4].lower()) == 5
    assert ranker.item_index("NO-SUCH") == 0 and ranker.region_index("XX") == 0
    assert ranker.region_index("gb") == ranker.manifest["regions"].index("GB") + 1
    short = ranker.encode_context([items[0], "NO-SUCH", items[2]]).items
    assert short.dtype == np.int64 and short.shape == (ranker.context_length,)
    assert short[-3:].tolist() == [1, 0, 3] and not short[:-3].any()
    events = [items[i % len(items)] for i in range(ranker.context_length + 5)]
    long = ranker.encode_context(events).items
    assert long.tolist() == [i % len(items) + 1 for i in range(5, ranker.context_length + 5)]


def test_missing_ages_take_the_manifest_defaults_and_sent_ages_are_kept(ranker: Ranker) -> None:
    items = ranker.manifest["items"][:3]
    defaults = np.asarray(ranker.manifest["default_ages_days"], dtype=np.float32)
    unaged = ranker.encode_context(items)
    assert unaged.ages_days.dtype == np.float32 and np.array_equal(unaged.ages_days, defaults)
    aged = ranker.encode_context(items, ages_days=(40.0, float("nan"), 2.5))
    assert aged.ages_days[-3:].tolist() == [40.0, defaults[-2], 2.5]
    assert np.array_equal(aged.ages_days[:-3], defaults[:-3])
    long = [items[0]] * (ranker.context_length + 2)
    assert ranker.encode_context(long, ages_days=list(range(len(long), 0, -1))).ages_days[-1] == 1.0
    with pytest.raises(ValueError, match="ages_days"):
        ranker.encode_context(items, ages_days=(1.0,))


def test_bare_item_array_ranks_like_a_context_with_default_ages(ranker: Ranker) -> None:
    context = ranker.encode_context(ranker.manifest["items"][:20])
    candidates = ranker.item_indices(ranker.manifest["items"][:60])
    penalty = np.zeros(60, dtype=np.float32)
    region = ranker.region_index("GB")
    bare = ranker.rank(context.items, region, candidates, penalty, 10)
    wrapped = ranker.rank(RequestContext(context.items, context.ages_days), region, candidates, penalty, 10)
    assert np.array_equal(bare[1], wrapped[1]) and np.array_equal(bare[0], wrapped[0])


def test_ages_change_scores_of_repeats_only_through_the_graph(trained_model: RankingModel) -> None:
    session = onnxruntime.InferenceSession(build_ranking_graph(trained_model).SerializeToString())
    context = np.zeros(trained_model.context_length, dtype=np.int64)
    context[-5:] = [1, 2, 3, 2, 4]
    candidates = np.array([2, 7, 9], dtype=np.int64)

    def scores(age: float) -> np.ndarray:
        ages = np.full(trained_model.context_length, age, dtype=np.float32)
        feeds = {"context_items": context, "context_ages_days": ages, "region": np.array([0], dtype=np.int64),
                 "candidates": candidates, "penalty": np.zeros(3, dtype=np.float32), "k": np.array([3], dtype=np.int64)}
        values, positions = run_one(session, feeds)
        return values[np.argsort(positions)]

    fresh, old = scores(1.0), scores(300.0)
    assert fresh[0] != pytest.approx(old[0], abs=1e-6)  # item 2 is in the context: its age matters
    np.testing.assert_allclose(fresh[1:], old[1:], atol=1e-6)  # new items do not depend on ages


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


def test_new_items_that_neighbour_the_context_outrank_the_same_items_without_it(trained_model: RankingModel) -> None:
    session = onnxruntime.InferenceSession(build_ranking_graph(trained_model).SerializeToString())
    stats = trained_model.statistics
    anchor = int(np.argmax(stats.neighbour_weights[:, 0]))
    neighbour = int(stats.neighbours[anchor, 0])
    context = np.zeros(trained_model.context_length, dtype=np.int64)

    def score_of_neighbour(context: np.ndarray) -> float:
        feeds = {
            "context_items": context,
            "context_ages_days": np.full(trained_model.context_length, 30.0, dtype=np.float32),
            "region": np.array([0], dtype=np.int64),
            "candidates": np.array([neighbour], dtype=np.int64),
            "penalty": np.zeros(1, dtype=np.float32),
            "k": np.array([1], dtype=np.int64),
        }
        return float(run_one(session, feeds)[0][0])

    with_anchor = context.copy()
    with_anchor[-1] = anchor
    assert neighbour not in with_anchor and score_of_neighbour(with_anchor) > score_of_neighbour(context)


def test_per_candidate_and_vocabulary_wide_branches_give_the_same_scores(trained_model: RankingModel) -> None:
    from models.export import PER_CANDIDATE_LIMIT

    session = onnxruntime.InferenceSession(build_ranking_graph(trained_model).SerializeToString())
    item_count = len(trained_model.statistics.vocabulary.items)
    rng = np.random.default_rng(5)
    context = rng.integers(0, item_count + 1, trained_model.context_length)
    context[-4:] = context[-1]
    ages = np.sort(rng.exponential(60.0, trained_model.context_length))[::-1].astype(np.float32)
    many = rng.integers(0, item_count + 1, PER_CANDIDATE_LIMIT + 1)
    many[:3] = [0, context[-1], context[-10]]  # the unknown item and repeats on both sides of the limit

    def scores(candidates: np.ndarray) -> np.ndarray:
        feeds = {"context_items": context.astype(np.int64), "context_ages_days": ages, "region": np.array([1], dtype=np.int64),
                 "candidates": candidates.astype(np.int64), "penalty": np.zeros(len(candidates), dtype=np.float32),
                 "k": np.array([len(candidates)], dtype=np.int64)}
        values, positions = run_one(session, feeds)
        return values[np.argsort(positions)]

    small, large = scores(many[:PER_CANDIDATE_LIMIT]), scores(many)
    np.testing.assert_allclose(small, large[:PER_CANDIDATE_LIMIT], rtol=0, atol=1e-5)
    expected = trained_model.score_candidates(context, ages.astype(np.float64), 1, many)
    np.testing.assert_allclose(large, expected, rtol=0, atol=1e-5)


def test_a_batch_ranks_each_request_as_it_would_alone(ranker: Ranker) -> None:
    """Shoppers are ranked in batches: regions, contexts, candidate counts (padded) and penalties all differ per row,
    and rows on both sides of the per-candidate limit run in separate batches, as the edge sends them."""
    from models.export import PER_CANDIDATE_LIMIT

    rng = np.random.default_rng(11)
    items = ranker.manifest["items"]
    for count_range in ((1, 300), (PER_CANDIDATE_LIMIT + 1, PER_CANDIDATE_LIMIT + 200)):
        requests = []
        for row in range(9):
            context = ranker.encode_context([items[i] for i in rng.integers(0, len(items), int(rng.integers(0, 60)))])
            candidates = ranker.item_indices([items[i] for i in rng.integers(0, len(items), int(rng.integers(*count_range)))])
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
                assert np.array_equal(positions[: finite.sum()], alone_positions[finite])
                assert not np.isfinite(scores[finite.sum():]).any() and len(scores) <= len(alone_scores)


def test_a_context_cut_to_its_filled_columns_scores_as_the_full_width_context(ranker: Ranker) -> None:
    """The ranker sends only the columns the widest context of a run fills; the graph then takes the last W
    position weights. Whatever the width, the answer is the one of the full [L] context."""
    assert ranker.trims_context
    rng = np.random.default_rng(5)
    items = ranker.manifest["items"]
    length = ranker.context_length
    candidates = ranker.item_indices(items[:150])
    penalty = np.zeros(len(candidates), dtype=np.float32)
    for events in (0, 1, 7, length - 1, length):
        context = ranker.encode_context([items[i] for i in rng.integers(0, len(items), events)],
                                        ages_days=list(rng.uniform(0, 90, events)))
        full = run_one(ranker._session, {"context_items": context.items, "context_ages_days": context.ages_days,
                                         "region": np.array([1]), "candidates": candidates, "penalty": penalty,
                                         "k": np.array([20])})
        scores, positions = ranker.rank(context, 1, candidates, penalty, 20)
        np.testing.assert_allclose(scores, full[0], rtol=0, atol=1e-6)
        assert np.array_equal(positions, full[1])
        assert ranker.context_width([context]) == max(events, 1)  # left-padded: the filled columns are the last ones
        bare = RequestContext(context.items, context.ages_days)  # built by hand: its width is not known
        assert ranker.context_width([context, bare]) == length


def test_a_graph_of_a_fixed_context_width_is_sent_the_whole_context(bundle_dir: Path, tmp_path: Path) -> None:
    """Batched bundles made before 2026-12-01 take exactly [B, L]: the ranker keeps sending all L columns."""
    import json

    import onnx

    from models.bundle import read_bundle, write_bundle

    onnx_bytes, manifest = read_bundle(bundle_dir)
    graph = onnx.load_from_string(onnx_bytes)
    for value in graph.graph.input:
        if value.name in ("context_items", "context_ages_days"):
            value.type.tensor_type.shape.dim[1].dim_value = manifest["context_length"]
    fields = {k: v for k, v in manifest.items() if k not in ("format", "version", "sha256", "created_at")}
    write_bundle(tmp_path, graph.SerializeToString(), json.loads(json.dumps(fields)))
    fixed = Ranker.load(tmp_path)  # its golden cases pass, alone and in one batch
    assert fixed.batched and not fixed.trims_context
    context = fixed.encode_context(manifest["items"][:3])
    assert fixed.context_width([context]) == fixed.context_length
    candidates = fixed.item_indices(manifest["items"][:40])
    penalty = np.zeros(len(candidates), dtype=np.float32)
    expected_scores, expected_positions = Ranker.load(bundle_dir).rank(context, 1, candidates, penalty, 10)
    scores, positions = fixed.rank(context, 1, candidates, penalty, 10)
    np.testing.assert_allclose(scores, expected_scores, rtol=0, atol=1e-6)
    assert np.array_equal(positions, expected_positions)
