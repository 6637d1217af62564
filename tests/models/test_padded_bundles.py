"""Bundles whose graph takes padded [B, W] profile rows (made before the ragged graph) load, pass their golden
cases and rank exactly as the ragged graph of the same model does. The padded bundle here is the test bundle's
model exported as the padded graph (models.export.ranking_graph over its tables), with the manifest it had then."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from models.bundle import PROFILE_INPUTS, read_bundle, write_bundle
from models.export import ranking_graph, signature
from models.runtime import Ranker


def _padded_bundle(bundle_dir: Path, out: Path, graph: onnx.ModelProto) -> Path:
    """bundle_dir's manifest (golden cases included) around a padded graph of the same model."""
    _, manifest = read_bundle(bundle_dir)
    fields = {k: v for k, v in manifest.items() if k not in ("format", "version", "sha256", "created_at")}
    fields["inputs"] = signature(ragged=False)["inputs"]
    write_bundle(out, graph.SerializeToString(), json.loads(json.dumps(fields)))
    return out


def _padded_graph(bundle_dir: Path) -> onnx.ModelProto:
    onnx_bytes, _ = read_bundle(bundle_dir)
    tables = {t.name: numpy_helper.to_array(t) for t in onnx.load_from_string(onnx_bytes).graph.initializer}
    return ranking_graph(tables, ragged=False)


@pytest.fixture(scope="module")
def ragged(bundle_dir: Path) -> Ranker:
    return Ranker.load(bundle_dir)


@pytest.fixture(scope="module")
def padded(bundle_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Ranker:
    return Ranker.load(_padded_bundle(bundle_dir, tmp_path_factory.mktemp("padded"), _padded_graph(bundle_dir)))


def test_a_padded_bundle_passes_its_golden_cases_and_is_fed_padded_rows(padded: Ranker, ragged: Ranker) -> None:
    assert ragged.ragged and not padded.ragged
    assert padded.reads_profiles and padded.batched and padded.trims_context
    assert [i.name for i in padded._session.get_inputs()][:5] == list(PROFILE_INPUTS)  # noqa: SLF001


def _random_batch(ranker: Ranker, rng: np.random.Generator, size: int) -> list:
    items, regions = ranker.manifest["items"], len(ranker.manifest["regions"])
    requests = []
    for row in range(size):
        events = [items[i] for i in rng.integers(0, len(items), int(rng.choice([0, 1, 5, 40, 400])))]
        context = ranker.encode_context(events + (["NOT-A-SKU"] if row % 3 == 0 else []))
        candidates = ranker.item_indices([items[i] for i in rng.integers(0, len(items), int(rng.integers(1, 300)))])
        penalty = np.where(rng.random(len(candidates)) < 0.1, -np.inf, 0.0).astype(np.float32)
        requests.append((context, int(rng.integers(0, regions + 1)), candidates, penalty))
    return requests


def test_the_padded_and_the_ragged_graph_give_the_same_answers(padded: Ranker, ragged: Ranker) -> None:
    """Same requests, same batches: the same ranking, and scores equal within float rounding (the two graphs sum
    the shopper's terms in another order)."""
    rng = np.random.default_rng(22)
    for size in (1, 2, 9, 13):
        for _ in range(4):
            requests = _random_batch(ragged, rng, size)
            for k in (10, 300):
                for (_, _, candidates, _), one, other in zip(
                    requests, ragged.rank_many(requests, k), padded.rank_many(requests, k)
                ):
                    np.testing.assert_allclose(one[0], other[0], rtol=0, atol=1e-5)
                    assert np.array_equal(candidates[one[1]], candidates[other[1]])


def test_a_graph_of_a_fixed_context_width_is_sent_the_whole_context(bundle_dir: Path, tmp_path: Path) -> None:
    """Padded graphs that take exactly [B, L] (batched bundles made before 2026-12-01): the ranker sends all L
    columns."""
    graph = _padded_graph(bundle_dir)
    _, manifest = read_bundle(bundle_dir)
    for value in graph.graph.input:
        if value.name in PROFILE_INPUTS:
            value.type.tensor_type.shape.dim[1].dim_value = manifest["context_length"]
    fixed = Ranker.load(_padded_bundle(bundle_dir, tmp_path, graph))  # golden cases pass, alone and in one batch
    assert fixed.batched and not fixed.trims_context
    context = fixed.encode_context(manifest["items"][:3])
    assert fixed.context_width([context]) == fixed.context_length
    candidates = fixed.item_indices(manifest["items"][:40])
    penalty = np.zeros(len(candidates), dtype=np.float32)
    expected_scores, expected_positions = Ranker.load(bundle_dir).rank(context, 1, candidates, penalty, 10)
    scores, positions = fixed.rank(context, 1, candidates, penalty, 10)
    np.testing.assert_allclose(scores, expected_scores, rtol=0, atol=1e-5)
    assert np.array_equal(positions, expected_positions)
