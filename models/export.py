"""Build the ONNX ranking graph: raw request inputs in, features computed inside, top-k out.

The learned weights are folded into the tables (one score vector over the whole vocabulary), so
a request is a dozen small kernels: per-call overhead, not arithmetic, is what costs at the edge.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from models.features import RankingModel

OPSET = 18  # ScatterElements with reduction="add" needs 16+; 18 is widely supported by onnxruntime

INPUTS = (
    ("context_items", "int64", ["L"]),
    ("region", "int64", [1]),
    ("candidates", "int64", ["N"]),
    ("penalty", "float32", ["N"]),
    ("k", "int64", [1]),
)
OUTPUTS = (("scores", "float32", ["K"]), ("indices", "int64", ["K"]))
_ELEMENT_TYPES = {"int64": TensorProto.INT64, "float32": TensorProto.FLOAT}


def folded_tables(model: RankingModel) -> dict[str, np.ndarray]:
    """The linear model rewritten as lookup tables, so the graph needs no separate weight step."""
    repeat_weight, affinity_weight, region_weight, global_weight = model.weights.tolist()
    stats = model.statistics
    region_base = (
        region_weight * stats.region_log_popularity + global_weight * stats.global_log_popularity[None, :] + model.bias
    )
    return {
        "embeddings": stats.embeddings.astype(np.float32),
        "region_base_scores": region_base.astype(np.float32),
        "affinity_position_weights": (affinity_weight * model.affinity_position_weights)[None, :].astype(np.float32),
        "repeat_position_weights": (repeat_weight * model.repeat_position_weights).astype(np.float32),
        "unknown_item_index": np.zeros(1, dtype=np.int64),
        # Column 0 of region_base_scores is the same in every row (see log_popularity).
        "unknown_item_score": region_base[:1, 0].astype(np.float32),
        "squeeze_axis": np.zeros(1, dtype=np.int64),
    }


def _value_info(name: str, dtype: str, shape: list) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, _ELEMENT_TYPES[dtype], shape)


def build_ranking_graph(model: RankingModel) -> onnx.ModelProto:
    """One graph: (context_items, region, candidates, penalty, k) → (scores, indices); checker-clean."""
    tables = folded_tables(model)
    L = model.context_length
    nodes = [
        # Popularity terms, bias and the unknown item's score for this region: [1, V+1].
        helper.make_node("Gather", ["region_base_scores", "region"], ["base_scores"], axis=0),
        # Affinity: E · (decayed sum of context embeddings); padding rows of E are zero.
        helper.make_node("Gather", ["embeddings", "context_items"], ["context_embeddings"], axis=0),
        helper.make_node("MatMul", ["affinity_position_weights", "context_embeddings"], ["context_vector"]),
        # Gemm with the constant table as B lets onnxruntime pre-pack it; a plain E·u MatMul is ~100x slower.
        helper.make_node(
            "Gemm", ["context_vector", "embeddings", "base_scores"], ["scores_row"], transB=1
        ),
        helper.make_node("Squeeze", ["scores_row", "squeeze_axis"], ["scores_without_repeats"]),
        # Repeats: each context position adds its decayed weight to its own item's score.
        helper.make_node(
            "ScatterElements",
            ["scores_without_repeats", "context_items", "repeat_position_weights"],
            ["scores_with_padding"],
            axis=0,
            reduction="add",
        ),
        # Padding (index 0) collected the weights of empty positions; put its score back.
        helper.make_node(
            "ScatterElements",
            ["scores_with_padding", "unknown_item_index", "unknown_item_score"],
            ["item_scores"],
            axis=0,
        ),
        helper.make_node("Gather", ["item_scores", "candidates"], ["candidate_scores"], axis=0),
        helper.make_node("Add", ["candidate_scores", "penalty"], ["ranked_scores"]),
        helper.make_node("Shape", ["candidates"], ["candidate_count"]),
        helper.make_node("Min", ["k", "candidate_count"], ["top_count"]),
        helper.make_node(
            "TopK", ["ranked_scores", "top_count"], ["scores", "indices"], axis=-1, largest=1, sorted=1
        ),
    ]
    inputs = [_value_info(name, dtype, [L] if name == "context_items" else shape) for name, dtype, shape in INPUTS]
    graph = helper.make_graph(
        nodes,
        "edgerec_ranker",
        inputs,
        [_value_info(name, dtype, shape) for name, dtype, shape in OUTPUTS],
        initializer=[numpy_helper.from_array(array, name) for name, array in tables.items()],
    )
    onnx_model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="edgerec.models"
    )
    onnx_model.ir_version = 8  # readable by onnxruntime releases back to 1.14
    onnx.checker.check_model(onnx_model, full_check=True)
    return onnx_model


def signature(context_length: int) -> dict[str, list[dict]]:
    """The manifest's inputs/outputs entries: name, dtype and shape (strings are dynamic sizes)."""
    return {
        "inputs": [
            {"name": name, "dtype": dtype, "shape": [context_length] if name == "context_items" else shape}
            for name, dtype, shape in INPUTS
        ],
        "outputs": [{"name": name, "dtype": dtype, "shape": shape} for name, dtype, shape in OUTPUTS],
    }
