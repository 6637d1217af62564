"""Build the ONNX ranking graph: a batch of shopper profiles in, features computed inside, top-k out.

The learned weights are folded into lookup tables and per-feature constants, so a run is a few dozen small kernels
over profile slots and [B, N] candidates, for a batch of requests (one row each) so that the edge ranks every
request that is ready at once in one run and shares its per-run cost. Two scatters build a (V+1)-vector a row (the
item-kNN sums and the repeat scores); everything else runs per slot or per candidate. The ragged graph (newer bundles,
issue #22) takes the filled slots of all requests one after another, each with its row; the padded one
(before) takes [B, W] slots, every row padded to the widest.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from models.bundle import (
    METADATA_FEATURE_SPEC,
    METADATA_TRAINING_WINDOW,
    METADATA_VERSION,
    PROFILE_INPUTS,
    SLOT_INPUTS,
)
from models.features import FEATURE_NAMES, RankingModel
from models.profile import DECAY_DAYS

OPSET = 18  # ScatterElements with reduction="add" needs 16+; 18 is widely supported by onnxruntime

_REQUEST_INPUTS = (("region", "int64", ["B"]), ("candidates", "int64", ["B", "N"]), ("penalty", "float32", ["B", "N"]))
RAGGED_INPUTS = (
    # S: the filled slots of the whole batch, request after request (each at most the bundle's context_length, P).
    *((name, "int64" if name == "slot_items" else "float32", ["S"]) for name in SLOT_INPUTS),
    ("slot_rows", "int64", ["S"]),  # the batch row (request) each slot belongs to
    *_REQUEST_INPUTS,
    ("k", "int64", [1]),
)
PADDED_INPUTS = (
    # W, the profile's width, is at most the bundle's context_length (P): a batch sends its widest profile's slots.
    *((name, "int64" if name == "profile_items" else "float32", ["B", "W"]) for name in PROFILE_INPUTS),
    *_REQUEST_INPUTS,
    ("k", "int64", [1]),
)
OUTPUTS = (("scores", "float32", ["B", "K"]), ("indices", "int64", ["B", "K"]))
_ELEMENT_TYPES = {"int64": TensorProto.INT64, "float32": TensorProto.FLOAT}
# Per-slot features and the graph value each is computed as; their weights multiply them before one Sum.
_SLOT_TERMS = (
    ("count", "n"),
    ("log_count", "log_n"),
    ("decayed", "d"),
    ("log_decayed", "log_d"),
    ("log_days_since_last_if_repeat", "log_a"),
    ("log_gap_if_repeat", "log_gap"),
    ("overdue_if_repeat", "overdue"),
    ("item_knn_if_repeat", "slot_knn"),
)


def _f32(value: float) -> np.ndarray:
    return np.array([value], dtype=np.float32)


def folded_tables(model: RankingModel) -> dict[str, np.ndarray]:
    """The linear model rewritten as lookup tables and constants, so the graph needs no separate weight step."""
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
    size = len(stats.vocabulary.items) + 1
    tables = {
        # Row-major [R+1, V+1] flattened: a candidate's base score is one Gather at region * (V+1) + item.
        "region_base_scores": base.astype(np.float32).ravel(),
        "item_count": np.array([size], dtype=np.int64),
        "repeat_base_scores": repeat_base.astype(np.float32),
        "neighbours": stats.neighbours.astype(np.int64),
        "neighbour_weights": stats.neighbour_weights.astype(np.float32),
        "item_knn_weight": _f32(weight["item_knn"]),
        "user_recency_weight": _f32(weight["user_recency_if_repeat"]),
        "user_events_weight": _f32(weight["user_events_if_repeat"]),
        "user_tenure_weight": _f32(weight["user_tenure_if_repeat"]),
    }
    for name, _ in _SLOT_TERMS:
        tables[f"{name}_weight"] = _f32(weight[name])
    return tables


def _constants() -> dict[str, np.ndarray]:
    """The graphs' fixed numbers and shapes (a graph takes those it uses)."""
    return {
        "negative_inverse_decay_days": _f32(-1.0 / DECAY_DAYS),
        "no_item": np.zeros(1, dtype=np.int64),
        "zero": _f32(0.0),
        "one": _f32(1.0),
        "one_half": _f32(1.5),
        "rows_shape": np.array([0, -1], dtype=np.int64),  # [B, W, K] -> [B, W * K]
        "flat_shape": np.array([-1], dtype=np.int64),  # [S, K] -> [S * K]
        "last_axis": np.array([2], dtype=np.int64),
        "column_shape": np.array([-1, 1], dtype=np.int64),  # [B] -> [B, 1]
        "row_axis": np.array([1], dtype=np.int64),
    }


def _value_info(name: str, dtype: str, shape: list) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, _ELEMENT_TYPES[dtype], shape)


def _node(op: str, inputs: list[str], output: str, **attributes) -> onnx.NodeProto:
    return helper.make_node(op, inputs, [output], **attributes)


def _log1p(value: str, output: str) -> list[onnx.NodeProto]:
    return [_node("Add", [value, "one"], output + "_plus_one"), _node("Log", [output + "_plus_one"], output)]


def _slot_nodes(inputs: tuple[str, ...]) -> list[onnx.NodeProto]:
    """Per-slot features from the profile inputs (items, counts, days since last and first, decayed); padding and
    unknown items (index 0) are zeroed first."""
    items, counts, since_last, since_first, decayed = inputs
    return [
        _node("Greater", [items, "no_item"], "known"),
        _node("Cast", ["known"], "known_ones", to=TensorProto.FLOAT),
        _node("Mul", [counts, "known_ones"], "n"),
        _node("Mul", [since_last, "known_ones"], "a"),
        _node("Mul", [since_first, "known_ones"], "f"),
        _node("Mul", [decayed, "known_ones"], "d"),
        *_log1p("n", "log_n"),
        *_log1p("d", "log_d"),
        *_log1p("a", "log_a"),
        # Mean gap between purchases: (first - last) / (count - 1), with count - 1 floored at 1 (one purchase: gap 0).
        _node("Sub", ["n", "one"], "n_minus_one"),
        _node("Max", ["n_minus_one", "one"], "gap_divisor"),
        _node("Sub", ["f", "a"], "span"),
        _node("Div", ["span", "gap_divisor"], "gap"),
        *_log1p("gap", "log_gap"),
        # Overdue only means something for an item bought twice or more.
        _node("Greater", ["n", "one_half"], "several"),
        _node("Cast", ["several"], "several_ones", to=TensorProto.FLOAT),
        _node("Sub", ["log_a", "log_gap"], "log_due"),
        _node("Mul", ["log_due", "several_ones"], "overdue"),
        # The newest purchase's recency, per slot (the shopper's is the row's maximum).
        _node("Mul", ["a", "negative_inverse_decay_days"], "scaled_ages"),
        _node("Exp", ["scaled_ages"], "age_decay"),
        _node("Where", ["known", "age_decay", "zero"], "slot_recency"),
    ]


def _user_terms() -> list[onnx.NodeProto]:
    """The shopper's weighted terms from its row's user_recency, user_events and user_tenure."""
    return [
        *_log1p("user_events", "log_events"),
        *_log1p("user_tenure", "log_tenure"),
        _node("Mul", ["user_recency", "user_recency_weight"], "recency_term"),
        _node("Mul", ["log_events", "user_events_weight"], "events_term"),
        _node("Mul", ["log_tenure", "user_tenure_weight"], "tenure_term"),
    ]


def _zeros(shape: str, output: str) -> onnx.NodeProto:
    value = helper.make_tensor(output + "_value", TensorProto.FLOAT, [1], [0.0])
    return helper.make_node("ConstantOfShape", [shape], [output], value=value)


def _candidate_nodes() -> list[onnx.NodeProto]:
    """Per candidate: regional base, its item-kNN term and its repeat score (0 for an item new to the shopper), read
    from the [B, V+1] rows knn_rows and repeat_rows; then the top k."""
    return [
        _node("Reshape", ["region", "column_shape"], "region_column"),
        _node("Mul", ["region_column", "item_count"], "region_offset"),
        _node("Add", ["candidates", "region_offset"], "region_candidates"),
        _node("Gather", ["region_base_scores", "region_candidates"], "candidate_base", axis=0),
        _node("GatherElements", ["knn_rows", "candidates"], "candidate_knn_sums", axis=1),
        *_log1p("candidate_knn_sums", "candidate_knn"),
        _node("Mul", ["candidate_knn", "item_knn_weight"], "candidate_knn_term"),
        _node("GatherElements", ["repeat_rows", "candidates"], "candidate_repeat", axis=1),
        _node("Sum", ["candidate_base", "candidate_knn_term", "candidate_repeat", "penalty"], "ranked_scores"),
        helper.make_node("Shape", ["candidates"], ["candidate_count"], start=1),
        # Min keeps k <= N inside the graph.
        _node("Min", ["k", "candidate_count"], "top_count"),
        helper.make_node("TopK", ["ranked_scores", "top_count"], ["scores", "indices"], axis=-1, largest=1, sorted=1),
    ]


def _padded_nodes() -> list[onnx.NodeProto]:
    """[B, W] slots: the scatters write row b of [B, V+1] at each slot's item (and its neighbours)."""
    add = {"axis": 1, "reduction": "add"}
    slot_terms = [f"{feature}_term" for feature, _ in _SLOT_TERMS]
    return [
        helper.make_node("Shape", ["profile_items"], ["batch_size"], end=1),
        _node("Concat", ["batch_size", "item_count"], "batch_items_shape", axis=0),
        _zeros("batch_items_shape", "zeros"),
        *_slot_nodes(PROFILE_INPUTS),
        # item-kNN: each profile item adds its neighbours' cosine weights times its count; padding's row is all zero.
        _node("Gather", ["neighbours", "profile_items"], "slot_neighbours", axis=0),
        _node("Gather", ["neighbour_weights", "profile_items"], "slot_neighbour_weights", axis=0),
        _node("Unsqueeze", ["n", "last_axis"], "n_column"),
        _node("Mul", ["slot_neighbour_weights", "n_column"], "weighted_neighbours"),
        _node("Reshape", ["slot_neighbours", "rows_shape"], "flat_neighbours"),
        _node("Reshape", ["weighted_neighbours", "rows_shape"], "flat_neighbour_weights"),
        _node("ScatterElements", ["zeros", "flat_neighbours", "flat_neighbour_weights"], "knn_rows", **add),
        _node("GatherElements", ["knn_rows", "profile_items"], "slot_knn_sums", axis=1),
        *_log1p("slot_knn_sums", "slot_knn"),
        # The shopper's terms [B, 1]: recency of the newest purchase, log events, log tenure.
        _node("ReduceMax", ["slot_recency", "row_axis"], "user_recency", keepdims=1),
        _node("ReduceSum", ["n", "row_axis"], "user_events", keepdims=1),
        _node("ReduceMax", ["f", "row_axis"], "latest_first", keepdims=1),
        _node("Max", ["latest_first", "zero"], "user_tenure"),
        *_user_terms(),
        # A slot's repeat score: its weighted features, its item's repeat base, and the shopper's terms.
        *[_node("Mul", [value, f"{feature}_weight"], f"{feature}_term") for feature, value in _SLOT_TERMS],
        _node("Gather", ["repeat_base_scores", "profile_items"], "slot_repeat_base", axis=0),
        _node("Sum", [*slot_terms, "slot_repeat_base", "recency_term", "events_term", "tenure_term"], "slot_scores"),
        _node("Mul", ["slot_scores", "known_ones"], "known_slot_scores"),
        _node("ScatterElements", ["zeros", "profile_items", "known_slot_scores"], "repeat_rows", **add),
        *_candidate_nodes(),
    ]


def _ragged_nodes() -> list[onnx.NodeProto]:
    """[S] slots with their rows: the scatters write one flat [B·(V+1)] vector at row·(V+1) + item (or neighbour),
    and reduce the shopper's terms per row into [B]; the candidates read its [B, V+1] view."""
    add, top = {"axis": 0, "reduction": "add"}, {"axis": 0, "reduction": "max"}
    slot_terms = [f"{feature}_term" for feature, _ in _SLOT_TERMS]
    return [
        helper.make_node("Shape", ["region"], ["batch_size"]),
        _node("Concat", ["batch_size", "item_count"], "batch_items_shape", axis=0),
        _node("Mul", ["batch_size", "item_count"], "flat_size"),
        _zeros("flat_size", "zeros"),
        _zeros("batch_size", "row_zeros"),
        *_slot_nodes(SLOT_INPUTS),
        _node("Mul", ["slot_rows", "item_count"], "slot_offset"),
        _node("Add", ["slot_items", "slot_offset"], "slot_positions"),
        # item-kNN: each profile item adds its neighbours' cosine weights times its count; padding's row is all zero.
        _node("Gather", ["neighbours", "slot_items"], "slot_neighbours", axis=0),
        _node("Gather", ["neighbour_weights", "slot_items"], "slot_neighbour_weights", axis=0),
        _node("Unsqueeze", ["n", "row_axis"], "n_column"),
        _node("Unsqueeze", ["slot_offset", "row_axis"], "offset_column"),
        _node("Mul", ["slot_neighbour_weights", "n_column"], "weighted_neighbours"),
        _node("Add", ["slot_neighbours", "offset_column"], "neighbour_positions"),
        _node("Reshape", ["neighbour_positions", "flat_shape"], "flat_neighbours"),
        _node("Reshape", ["weighted_neighbours", "flat_shape"], "flat_neighbour_weights"),
        _node("ScatterElements", ["zeros", "flat_neighbours", "flat_neighbour_weights"], "knn_sums", **add),
        _node("Gather", ["knn_sums", "slot_positions"], "slot_knn_sums", axis=0),
        *_log1p("slot_knn_sums", "slot_knn"),
        # The shopper's terms [B], reduced over its row's slots; zeros start the maxima as padding did (tenure >= 0).
        _node("ScatterElements", ["row_zeros", "slot_rows", "slot_recency"], "user_recency", **top),
        _node("ScatterElements", ["row_zeros", "slot_rows", "n"], "user_events", **add),
        _node("ScatterElements", ["row_zeros", "slot_rows", "f"], "user_tenure", **top),
        *_user_terms(),
        _node("Sum", ["recency_term", "events_term", "tenure_term"], "user_terms"),
        _node("Gather", ["user_terms", "slot_rows"], "slot_user_terms", axis=0),
        # A slot's repeat score: its weighted features, its item's repeat base, and the shopper's terms.
        *[_node("Mul", [value, f"{feature}_weight"], f"{feature}_term") for feature, value in _SLOT_TERMS],
        _node("Gather", ["repeat_base_scores", "slot_items"], "slot_repeat_base", axis=0),
        _node("Sum", [*slot_terms, "slot_repeat_base", "slot_user_terms"], "slot_scores"),
        _node("Mul", ["slot_scores", "known_ones"], "known_slot_scores"),
        _node("ScatterElements", ["zeros", "slot_positions", "known_slot_scores"], "repeat_scores", **add),
        _node("Reshape", ["knn_sums", "batch_items_shape"], "knn_rows"),
        _node("Reshape", ["repeat_scores", "batch_items_shape"], "repeat_rows"),
        *_candidate_nodes(),
    ]


def build_ranking_graph(model: RankingModel, ragged: bool = True) -> onnx.ModelProto:
    """One graph: (profile slots, region, candidates, penalty, k) → (scores, indices); checker-clean.

    Batched: row b of [B] regions, [B, N] candidates and penalties is one request; k is shared, so a caller wanting
    fewer keeps the first ones of its row. Ragged (the default): the filled slots of request b are sent with
    slot_rows b, all requests' slots in one [S] per input. Padded: [B, W] slots, a profile's last W <= P columns
    (filled slots last), W the widest profile's filled slots. Requests with fewer candidates than N pad with item 0
    and penalty -inf. Padding and unknown slot items (index 0) add zero to both scatters, so the unknown item scores
    as "never seen" without a fix-up.
    """
    return ranking_graph(folded_tables(model), ragged)


def ranking_graph(tables: dict[str, np.ndarray], ragged: bool = True) -> onnx.ModelProto:
    """The graph of build_ranking_graph around folded tables (folded_tables, or a bundle's initializers)."""
    nodes = _ragged_nodes() if ragged else _padded_nodes()
    used = {name for node in nodes for name in node.input}
    initializers = {name: array for name, array in {**_constants(), **tables}.items() if name in used}
    graph = helper.make_graph(
        nodes,
        "edgerec_ranker",
        [_value_info(name, dtype, shape) for name, dtype, shape in (RAGGED_INPUTS if ragged else PADDED_INPUTS)],
        [_value_info(name, dtype, shape) for name, dtype, shape in OUTPUTS],
        initializer=[numpy_helper.from_array(array, name) for name, array in initializers.items()],
    )
    onnx_model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="edgerec.models"
    )
    onnx_model.ir_version = 8  # readable by onnxruntime releases back to 1.14
    onnx.checker.check_model(onnx_model, full_check=True)
    return onnx_model


def describe(onnx_model: onnx.ModelProto, version: str, training_window: str, feature_spec_sha256: str) -> None:
    """Write the bundle's version, training data window and feature spec digest into the model's metadata_props,
    so that the file names what it is wherever it travels without its manifest."""
    helper.set_model_props(
        onnx_model,
        {
            METADATA_VERSION: version,
            METADATA_TRAINING_WINDOW: training_window,
            METADATA_FEATURE_SPEC: feature_spec_sha256,
        },
    )


def signature(ragged: bool = True) -> dict[str, list[dict]]:
    """The manifest's inputs/outputs entries: name, dtype and shape (strings are dynamic sizes)."""
    inputs = RAGGED_INPUTS if ragged else PADDED_INPUTS
    return {
        "inputs": [{"name": name, "dtype": dtype, "shape": shape} for name, dtype, shape in inputs],
        "outputs": [{"name": name, "dtype": dtype, "shape": shape} for name, dtype, shape in OUTPUTS],
    }
