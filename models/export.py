"""Build the ONNX ranking graph: raw request inputs in, features computed inside, top-k out.

The learned weights are folded into lookup tables, so a run is a few dozen small kernels, over a batch
of requests (one row each) so that the edge can rank every request that is ready at once and share the
per-run cost. The item-kNN scatter and Logs over the vocabulary are what a row pays for, so small
candidate sets compute their features per candidate (see build_ranking_graph).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from models.features import FEATURE_NAMES, RankingModel, position_decay

OPSET = 18  # ScatterElements with reduction="add" needs 16+; 18 is widely supported by onnxruntime

INPUTS = (
    # W, the context's width, is at most the bundle's context_length: a batch sends its longest context's columns.
    ("context_items", "int64", ["B", "W"]),
    ("context_ages_days", "float32", ["B", "W"]),
    ("region", "int64", ["B"]),
    ("candidates", "int64", ["B", "N"]),
    ("penalty", "float32", ["B", "N"]),
    ("k", "int64", [1]),
)
OUTPUTS = (("scores", "float32", ["B", "K"]), ("indices", "int64", ["B", "K"]))
# ORT's Gather copies one element at a time, so per-candidate features lose to vocabulary-wide kernels
# (V+1 ≈ 3,600 on the full data) for large N: on the 2-core machine the two tie at about 400 candidates.
PER_CANDIDATE_LIMIT = 400
_ELEMENT_TYPES = {"int64": TensorProto.INT64, "float32": TensorProto.FLOAT}


def folded_tables(model: RankingModel) -> dict[str, np.ndarray]:
    """The linear model rewritten as lookup tables, so the graph needs no separate weight step."""
    weight = dict(zip(FEATURE_NAMES, model.weights.tolist()))
    stats = model.statistics
    base = (
        model.bias
        + weight["region_popularity"] * stats.region_log_popularity
        + weight["trend_popularity"] * stats.trend_log_popularity[None, :]
        + weight["growth"] * stats.growth[None, :]
    )
    repeat_base = (
        weight["is_repeat"]
        + weight["repeat_propensity_if_repeat"] * stats.repeat_propensity
        + weight["trend_popularity_if_repeat"] * stats.trend_log_popularity
        + weight["growth_if_repeat"] * stats.growth
    )
    position_weights = weight["count"] + weight["recent_count"] * position_decay(model.context_length, model.recent_decay)
    size = len(stats.vocabulary.items) + 1
    return {
        # Row-major [R+1, V+1] flattened: a candidate's base score is one Gather at region * (V+1) + item.
        "region_base_scores": base.astype(np.float32).ravel(),
        "item_count": np.array([size], dtype=np.int64),
        "repeat_base_scores": repeat_base.astype(np.float32),
        "position_weights": position_weights.astype(np.float32),
        "neighbours": stats.neighbours.astype(np.int64),
        "neighbour_weights": stats.neighbour_weights.astype(np.float32),
        "log_count_weight": np.array([weight["log_count"]], dtype=np.float32),
        "item_knn_weight": np.array([weight["item_knn"]], dtype=np.float32),
        "item_knn_if_repeat_weight": np.array([weight["item_knn_if_repeat"]], dtype=np.float32),
        "negative_inverse_decay_days": np.array([-1.0 / model.age_decay_days], dtype=np.float32),
        "decayed_count_weight": np.array([weight["decayed_count_days"]], dtype=np.float32),
        "user_recency_weight": np.array([weight["user_recency_if_repeat"]], dtype=np.float32),
        # weight * log(1 + events) for every possible number of events 0..L: one Gather instead of four nodes.
        "context_size_terms": (weight["user_context_size_if_repeat"] * np.log1p(np.arange(model.context_length + 1))).astype(np.float32),
        "no_item": np.zeros(1, dtype=np.int64),
        "zero": np.zeros(1, dtype=np.float32),
        "rows_shape": np.array([0, -1], dtype=np.int64),  # [B, W, M] -> [B, W * M]
        "context_length": np.array([model.context_length], dtype=np.int64),
        "column_shape": np.array([-1, 1], dtype=np.int64),  # [B] -> [B, 1]
        "row_axis": np.array([1], dtype=np.int64),
        "table_shape": np.array([len(stats.vocabulary.regions) + 1, size], dtype=np.int64),
        # At most this many candidates take the per-candidate branch; more take the vocabulary-wide one.
        "per_candidate_limit": np.array([PER_CANDIDATE_LIMIT], dtype=np.int64),
    }


def _value_info(name: str, dtype: str, shape: list) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, _ELEMENT_TYPES[dtype], shape)


def _node(op: str, inputs: list[str], output: str, **attributes) -> onnx.NodeProto:
    return helper.make_node(op, inputs, [output], **attributes)


def _per_candidate_nodes() -> list[onnx.NodeProto]:
    """ranked_scores [B, N] from gathers at the candidates: Logs and sums over N, not V+1."""
    return [
        _node("ScatterElements", ["zeros", "context_items", "context_weights"], "count_terms", axis=1, reduction="add"),
        _node("GatherElements", ["count_terms", "candidates"], "candidate_count_terms", axis=1),
        _node("GatherElements", ["one_plus_count", "candidates"], "candidate_one_plus_count", axis=1),
        _node("GatherElements", ["one_plus_knn", "candidates"], "candidate_one_plus_knn", axis=1),
        _node("Mul", ["region_column", "item_count"], "region_offset"),
        _node("Add", ["candidates", "region_offset"], "region_candidates"),
        _node("Gather", ["region_base_scores", "region_candidates"], "candidate_base", axis=0),
        _node("Gather", ["repeat_base_scores", "candidates"], "candidate_repeat_base", axis=0),
        _node("Log", ["candidate_one_plus_count"], "log_count"),
        _node("Sign", ["log_count"], "is_repeat"),  # log(1 + count) > 0 exactly when count > 0
        _node("Log", ["candidate_one_plus_knn"], "item_knn"),
        _node("Mul", ["log_count", "log_count_weight"], "log_count_term"),
        _node("Mul", ["item_knn", "item_knn_weight"], "item_knn_term"),
        _node("Sum", ["candidate_base", "candidate_count_terms", "log_count_term", "item_knn_term", "penalty"], "shared_scores"),
        # Repeat-only terms: their own base per item plus their own kNN weight, gated by is_repeat.
        _node("Mul", ["item_knn", "item_knn_if_repeat_weight"], "repeat_knn_term"),
        _node("Sum", ["candidate_repeat_base", "repeat_knn_term", "user_terms"], "repeat_terms"),
        _node("Mul", ["repeat_terms", "is_repeat"], "gated_repeat_terms"),
        _node("Add", ["shared_scores", "gated_repeat_terms"], "branch_scores"),
    ]


def _per_item_nodes() -> list[onnx.NodeProto]:
    """ranked_scores [B, N] from the same sums over all V+1 items, then one gather: cheaper for large N."""
    return [
        _node("Reshape", ["region_base_scores", "table_shape"], "base_table"),
        _node("Gather", ["base_table", "region"], "base_scores", axis=0),  # [B, V+1]: each request's region row
        _node("ScatterElements", ["base_scores", "context_items", "context_weights"], "with_counts", axis=1, reduction="add"),
        _node("Log", ["one_plus_count"], "log_count"),
        _node("Sign", ["log_count"], "is_repeat"),
        _node("Log", ["one_plus_knn"], "item_knn"),
        _node("Mul", ["log_count", "log_count_weight"], "log_count_term"),
        _node("Mul", ["item_knn", "item_knn_weight"], "item_knn_term"),
        _node("Sum", ["with_counts", "log_count_term", "item_knn_term"], "shared_scores"),
        _node("Mul", ["item_knn", "item_knn_if_repeat_weight"], "repeat_knn_term"),
        _node("Sum", ["repeat_base_scores", "repeat_knn_term", "user_terms"], "repeat_terms"),
        _node("Mul", ["repeat_terms", "is_repeat"], "gated_repeat_terms"),
        _node("Add", ["shared_scores", "gated_repeat_terms"], "item_scores"),
        _node("GatherElements", ["item_scores", "candidates"], "candidate_scores", axis=1),
        _node("Add", ["candidate_scores", "penalty"], "branch_scores"),
    ]


def _branch(name: str, nodes: list[onnx.NodeProto]) -> onnx.GraphProto:
    """An If branch: reads the outer graph's values by name, returns branch_scores [B, N]."""
    return helper.make_graph(nodes, name, [], [_value_info("branch_scores", "float32", ["B", "N"])])


def _filled(name: str, value: float) -> onnx.NodeProto:
    """A [B, V+1] float32 tensor of one value, made per run (a batch's rows are the scatters' starting points)."""
    return helper.make_node("ConstantOfShape", ["batch_items_shape"], [name],
                            value=helper.make_tensor(name + "_value", TensorProto.FLOAT, [1], [value]))


def build_ranking_graph(model: RankingModel) -> onnx.ModelProto:
    """One graph: (context_items, context_ages_days, region, candidates, penalty, k) → (scores, indices); checker-clean.

    Batched: row b of every input is one request ([B, W] contexts, [B] regions, [B, N] candidates and
    penalties; k is shared, so a caller wanting fewer keeps the first ones of its row). Contexts are the
    last W <= L positions: a caller sends only the columns its longest context fills, since every per-event
    kernel (the item-kNN gathers and scatter above all) costs in proportion to W. Requests with fewer
    candidates than N pad with item 0 and penalty -inf. A batch of 8 costs about 25 µs per request on the
    2-core machine against 48 µs for a batch of 1, since the per-node and cold-cache costs are shared.
    Three scatters per row build [B, V+1] tensors (1 + count, 1 + item-kNN score, and the count terms);
    an If then picks how to finish. Up to PER_CANDIDATE_LIMIT candidates, the popularity lookups, both Logs,
    the Sign and the weighted sum run on the candidates after gathers; above it, they run over all V+1
    items followed by one gather, which is cheaper there. Both branches compute the same float32 sums of
    the same terms, so they agree to rounding. Padding and unknown context items (index 0) add zero to
    every scatter, so the unknown item scores as "never seen" without a fix-up.
    """
    tables = folded_tables(model)
    add = {"axis": 1, "reduction": "add"}
    nodes = [
        helper.make_node("Shape", ["context_items"], ["batch_size"], end=1),
        _node("Concat", ["batch_size", "item_count"], "batch_items_shape", axis=0),
        _filled("ones", 1.0),
        _filled("zeros", 0.0),
        # exp(-age / decay) of each real event; padding and unknown items (index 0) weigh 0 everywhere.
        _node("Greater", ["context_items", "no_item"], "is_event"),
        _node("Cast", ["is_event"], "event_ones", to=TensorProto.FLOAT),
        _node("Mul", ["context_ages_days", "negative_inverse_decay_days"], "scaled_ages"),
        _node("Exp", ["scaled_ages"], "age_decay"),
        _node("Where", ["is_event", "age_decay", "zero"], "event_recency"),
        # count, event-decayed and day-decayed count: each context position adds its weight to its own item.
        _node("Mul", ["event_recency", "decayed_count_weight"], "decayed_count_terms"),
        # A context narrower than L is the last W positions (most recent last): their weights are the last W.
        helper.make_node("Shape", ["context_items"], ["context_width"], start=1, end=2),
        _node("Sub", ["context_length", "context_width"], "first_position"),
        _node("Slice", ["position_weights", "first_position", "context_length"], "width_position_weights"),
        _node("Add", ["width_position_weights", "decayed_count_terms"], "position_terms"),
        _node("Mul", ["position_terms", "event_ones"], "context_weights"),
        _node("ScatterElements", ["ones", "context_items", "event_ones"], "one_plus_count", **add),
        # item-kNN: each context item adds its neighbours' cosine weights; padding's row is all zero weight.
        _node("Gather", ["neighbours", "context_items"], "context_neighbours", axis=0),
        _node("Gather", ["neighbour_weights", "context_items"], "context_neighbour_weights", axis=0),
        _node("Reshape", ["context_neighbours", "rows_shape"], "flat_neighbours"),
        _node("Reshape", ["context_neighbour_weights", "rows_shape"], "flat_neighbour_weights"),
        _node("ScatterElements", ["ones", "flat_neighbours", "flat_neighbour_weights"], "one_plus_knn", **add),
        # The shopper's recency (newest event) and context size move all their repeats together: [B, 1] each.
        _node("ReduceMax", ["event_recency", "row_axis"], "user_recency", keepdims=1),
        _node("Mul", ["user_recency", "user_recency_weight"], "user_recency_term"),
        _node("Cast", ["is_event"], "event_flags", to=TensorProto.INT64),
        _node("ReduceSum", ["event_flags", "row_axis"], "events", keepdims=1),
        _node("Gather", ["context_size_terms", "events"], "context_size_term", axis=0),
        _node("Add", ["user_recency_term", "context_size_term"], "user_terms"),
        _node("Reshape", ["region", "column_shape"], "region_column"),
        helper.make_node("Shape", ["candidates"], ["candidate_count"], start=1),
        _node("LessOrEqual", ["candidate_count", "per_candidate_limit"], "few_candidates"),
        helper.make_node(
            "If", ["few_candidates"], ["ranked_scores"],
            then_branch=_branch("per_candidate", _per_candidate_nodes()),
            else_branch=_branch("per_item", _per_item_nodes()),
        ),
        # Min keeps k <= N inside the graph; dropping it (k clipped by the caller) measured no faster.
        _node("Min", ["k", "candidate_count"], "top_count"),
        helper.make_node("TopK", ["ranked_scores", "top_count"], ["scores", "indices"], axis=-1, largest=1, sorted=1),
    ]
    inputs = [_value_info(name, dtype, shape) for name, dtype, shape in INPUTS]
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


def signature() -> dict[str, list[dict]]:
    """The manifest's inputs/outputs entries: name, dtype and shape (strings are dynamic sizes)."""
    return {
        "inputs": [
            {"name": name, "dtype": dtype, "shape": shape} for name, dtype, shape in INPUTS
        ],
        "outputs": [{"name": name, "dtype": dtype, "shape": shape} for name, dtype, shape in OUTPUTS],
    }
