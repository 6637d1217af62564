"""Bundles made before batched graphs (inputs of one request: [L] contexts, [N] candidates) still load and rank.

The origin keeps every model version it ever published, and a rollback may send an edge one of those. The graph
here is small but has the old signature: each candidate's score is a table lookup plus its penalty, then TopK.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from models.bundle import golden_case, sequence_history, write_bundle
from models.runtime import Ranker

ITEMS = [f"SKU{i}" for i in range(1, 31)]
LENGTH = 8
TABLE = np.linspace(0.0, 3.0, len(ITEMS) + 1).astype(np.float32)[::-1].copy()  # item 1 best, the unknown item 0 last
TABLE[0] = -1.0


def _unbatched_graph() -> bytes:
    def value(name, dtype, shape):
        return helper.make_tensor_value_info(name, dtype, shape)

    nodes = [
        helper.make_node("Gather", ["table", "candidates"], ["looked_up"], axis=0),
        helper.make_node("Add", ["looked_up", "penalty"], ["ranked"]),
        helper.make_node("Shape", ["candidates"], ["count"]),
        helper.make_node("Min", ["k", "count"], ["top"]),
        helper.make_node("TopK", ["ranked", "top"], ["scores", "indices"], axis=-1, largest=1, sorted=1),
    ]
    graph = helper.make_graph(
        nodes,
        "legacy_ranker",
        [
            value("context_items", TensorProto.INT64, [LENGTH]),
            value("context_ages_days", TensorProto.FLOAT, [LENGTH]),
            value("region", TensorProto.INT64, [1]),
            value("candidates", TensorProto.INT64, ["N"]),
            value("penalty", TensorProto.FLOAT, ["N"]),
            value("k", TensorProto.INT64, [1]),
        ],
        [value("scores", TensorProto.FLOAT, ["K"]), value("indices", TensorProto.INT64, ["K"])],
        initializer=[numpy_helper.from_array(TABLE, "table")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model.SerializeToString()


def _expected(candidates: np.ndarray, excluded: list[int], k: int) -> tuple[np.ndarray, np.ndarray]:
    scores = TABLE[candidates].astype(np.float64)
    scores[excluded] = -np.inf
    order = np.argsort(-scores, kind="stable")[: min(k, len(candidates))]
    return scores[order], order


def _write_unbatched(tmp_path, golden: list) -> None:
    """An unbatched bundle of the test graph with these golden cases, written to tmp_path."""
    write_bundle(
        tmp_path,
        _unbatched_graph(),
        {
            "inputs": [],
            "outputs": [],
            "context_length": LENGTH,
            "items": ITEMS,
            "regions": ["GB"],
            "default_ages_days": [30.0] * LENGTH,
            "golden": golden,
        },
    )


def _bundle(tmp_path, cases: list[tuple[np.ndarray, list[int], int]]) -> Ranker:
    golden = [
        golden_case(
            sequence_history(np.zeros(LENGTH, dtype=np.int64), np.ones(LENGTH)),
            0,
            candidates,
            excluded,
            k,
            *_expected(candidates, excluded, k),
        )
        for candidates, excluded, k in cases
    ]
    _write_unbatched(tmp_path, golden)
    return Ranker.load(tmp_path)


def test_an_unbatched_bundle_passes_its_golden_cases_and_ranks_one_request_at_a_time(tmp_path):
    ranker = _bundle(tmp_path, [(np.array([5, 2, 9, 1]), [], 3), (np.array([3, 4, 0, 7, 8]), [1], 4)])
    assert not ranker.batched
    context = ranker.encode_context(ITEMS[:3])
    requests = [
        (context, 1, np.array([7, 3, 12, 2], dtype=np.int64), np.zeros(4, dtype=np.float32)),
        (context, 1, np.array([30, 1], dtype=np.int64), np.array([0, -np.inf], dtype=np.float32)),
    ]
    ranked = ranker.rank_many(requests, 3)
    assert [positions.tolist() for _, positions in ranked] == [[3, 1, 0], [0, 1]]
    assert ranked[1][0][1] == -np.inf
    alone = ranker.rank(*requests[0], 3)
    assert np.array_equal(alone[1], ranked[0][1]) and np.array_equal(alone[0], ranked[0][0])


def test_an_unbatched_bundle_with_a_wrong_golden_case_is_refused(tmp_path):
    import pytest

    from models.bundle import BundleError

    candidates = np.array([5, 2, 9, 1])
    golden = [
        golden_case(
            sequence_history(np.zeros(LENGTH, dtype=np.int64), np.ones(LENGTH)),
            0,
            candidates,
            [],
            2,
            np.array([3.0, 2.0]),
            np.array([3, 1]),
        )
    ]  # the right order, wrong scores
    _write_unbatched(tmp_path, golden)
    with pytest.raises(BundleError, match="scores off"):
        Ranker.load(tmp_path)
