"""The peers' scorer: edgerec's ONNX ranker over a region's candidates, top-k, for the model servers' runtimes.

Both peer runtimes (mlserver_runtime.py, pytriton_runtime.py) import it. It runs in a peer's own venv, so it
imports nothing from edgerec: the harness copies it next to model.onnx, manifest.json and catalog.json, and it
encodes a request as models.runtime.Ranker does for a shopper who sends recent items without ages.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import onnxruntime

# The inputs of edgerec's ranking graphs (models/export.py). Profile graphs (bundles since 2026-12-04) read a
# summary per item of the shopper's events; context graphs (before) read the last L events, later with their ages.
PROFILE_ROWS = (
    "profile_items",
    "profile_counts",
    "profile_days_since_last",
    "profile_days_since_first",
    "profile_decayed",
)
CONTEXT_ROWS = ("context_items", "context_ages_days")
# Ragged graphs (since 2026-12-04, later that day) read the filled slots of the whole batch, each slot's row in
# slot_rows: the same per-item summary as PROFILE_ROWS.
SLOT_ROWS = ("slot_items", "slot_counts", "slot_days_since_last", "slot_days_since_first", "slot_decayed")
SHARED_FEEDS = {"region", "candidates", "penalty", "k"}
DEFAULT_DECAY_DAYS = 180.0  # models/profile.py's, for manifests that do not say


@dataclass(frozen=True)
class Answer:
    offer_ids: list[str]
    scores: np.ndarray  # float32, best first


@dataclass(frozen=True)
class _Region:
    index: int
    candidates: np.ndarray  # int64 [N], the offers sorted by id, as the edge sorts them
    penalty: np.ndarray  # float32 [N]: 0, or -inf for an offer out of stock or without a price
    offer_ids: list[str]
    positions: dict[str, list[int]]  # offer id and sku -> positions, for the excluded offers


def session_options() -> onnxruntime.SessionOptions:
    """The edge's session settings (models/runtime.py, which this venv cannot import): one thread, no spinning."""
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    return options


class Scorer:
    """The model folder's graph, vocabularies and regional candidates; `top_many` answers a batch in one run."""

    def __init__(self, folder: Path) -> None:
        manifest = json.loads((folder / "manifest.json").read_text())
        catalog = json.loads((folder / "catalog.json").read_text())
        onnxruntime.disable_telemetry_events()
        self._session = onnxruntime.InferenceSession(
            str(folder / "model.onnx"), sess_options=session_options(), providers=["CPUExecutionProvider"]
        )
        graph_inputs = self._session.get_inputs()
        names = {i.name for i in graph_inputs}
        self.ragged = graph_inputs[0].name == SLOT_ROWS[0]
        self.reads_profiles = self.ragged or graph_inputs[0].name == PROFILE_ROWS[0]
        if self.ragged:
            self._rows: tuple[str, ...] = SLOT_ROWS
        elif self.reads_profiles:
            self._rows = PROFILE_ROWS
        else:
            self._rows = tuple(n for n in CONTEXT_ROWS if n in names)
        if names != set(self._rows) | SHARED_FEEDS | ({"slot_rows"} if self.ragged else set()):
            # The graph's signature moved on: say so rather than serve something else than the edge does.
            raise ValueError(f"the ranking graph takes {sorted(names)}; this scorer feeds {self._rows} and more")
        first_shape = graph_inputs[0].shape
        self.batched = self.ragged or len(first_shape) == 2  # graphs since 2026-12 take a batch of requests
        # and since 12-01 any width up to L
        self._trims = self.ragged or (self.batched and not isinstance(first_shape[1], int))
        self._length = int(manifest["context_length"])
        self._default_ages = np.asarray(manifest["default_ages_days"], dtype=np.float32)
        self._decay_days = float((manifest.get("profile") or {}).get("decay_days", DEFAULT_DECAY_DAYS))
        self._items = {str(c).upper(): i + 1 for i, c in enumerate(manifest["items"])}
        regions = {str(c).upper(): i + 1 for i, c in enumerate(manifest["regions"])}
        self._regions = {name: _region(offers, regions.get(name, 0), self._items) for name, offers in catalog.items()}

    def top(self, recent: Sequence[str], region: str, k: int, exclude: Sequence[str] = ()) -> Answer:
        return self.top_many([(recent, region, k, exclude)])[0]

    def top_many(self, requests: Sequence[tuple[Sequence[str], str, int, Sequence[str]]]) -> list[Answer]:
        """Each (recent items, region, k, excluded offer ids or skus): its offers best first, at most k, none at
        -inf. A batched graph scores them all in one run at the largest k, candidates padded at -inf."""
        if not self.batched:
            return [self._run_single(request) for request in requests]
        return self._run_batch(requests)

    def _events(self, recent: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        items = np.array([self._items.get(s.upper(), 0) for s in recent], dtype=np.int64)
        # Events sent without an age take the manifest's default for their position from the newest.
        shown = min(len(items), len(self._default_ages))
        ages = np.full(len(items), self._default_ages[0] if len(self._default_ages) else 0.0, dtype=np.float32)
        if shown:
            ages[len(items) - shown :] = self._default_ages[len(self._default_ages) - shown :]
        return items, ages

    def _row(self, recent: Sequence[str]) -> tuple[int, list[np.ndarray]]:
        """(filled positions, the row's arrays of length L in the graph's order)."""
        if self.reads_profiles:
            return _profile_row(*self._events(recent), self._length, self._decay_days)
        recent = list(recent)[-self._length :] if self._length else []
        items = np.zeros(self._length, dtype=np.int64)
        if recent:
            items[self._length - len(recent) :] = [self._items.get(s.upper(), 0) for s in recent]
        return len(recent), [items, self._default_ages][: len(self._rows)]

    def _penalty(self, region: _Region, exclude: Sequence[str]) -> np.ndarray:
        if not exclude:
            return region.penalty
        penalty = region.penalty.copy()
        for key in exclude:
            for position in region.positions.get(key, ()):
                penalty[position] = -np.inf
        return penalty

    def _run_single(self, request: tuple[Sequence[str], str, int, Sequence[str]]) -> Answer:
        recent, region_name, k, exclude = request
        region = self._regions[region_name.upper()]
        _, row = self._row(recent)
        feeds: dict[str, Any] = dict(zip(self._rows, row))
        feeds.update(
            region=np.array([region.index], dtype=np.int64),
            candidates=region.candidates,
            penalty=self._penalty(region, exclude),
            k=np.array([k], dtype=np.int64),
        )
        scores, positions = self._session.run(None, feeds)
        return _answer(region, scores, positions, k)

    def _run_batch(self, requests: Sequence[tuple[Sequence[str], str, int, Sequence[str]]]) -> list[Answer]:
        regions = [self._regions[region.upper()] for _, region, _, _ in requests]
        encoded = [self._row(recent) for recent, _, _, _ in requests]
        if self.ragged:  # each row's filled slots, one row after another
            columns = [np.concatenate([row[c][self._length - filled :] for filled, row in encoded]) for c in range(5)]
            slot_rows = np.repeat(np.arange(len(encoded), dtype=np.int64), [filled for filled, _ in encoded])
        else:
            width = max(1, max(filled for filled, _ in encoded)) if self._trims else self._length
            columns = [np.stack([row[c][self._length - width :] for _, row in encoded]) for c in range(len(self._rows))]
        count = max(len(r.candidates) for r in regions)
        candidates = np.zeros((len(requests), count), dtype=np.int64)
        penalties = np.full((len(requests), count), -np.inf, dtype=np.float32)
        for i, (region, (_, _, _, exclude)) in enumerate(zip(regions, requests)):
            candidates[i, : len(region.candidates)] = region.candidates
            penalties[i, : len(region.candidates)] = self._penalty(region, exclude)
        k = max(k for _, _, k, _ in requests)
        feeds: dict[str, Any] = dict(zip(self._rows, columns))
        if self.ragged:
            feeds["slot_rows"] = slot_rows
        feeds.update(
            region=np.array([r.index for r in regions], dtype=np.int64),
            candidates=candidates,
            penalty=penalties,
            k=np.array([k], dtype=np.int64),
        )
        scores, positions = self._session.run(None, feeds)
        return [
            _answer(region, scores[i], positions[i], req[2]) for i, (region, req) in enumerate(zip(regions, requests))
        ]


def _region(offers: list[dict[str, Any]], index: int, items: dict[str, int]) -> _Region:
    offers = sorted(offers, key=lambda o: o["id"])
    positions: dict[str, list[int]] = {}
    for i, offer in enumerate(offers):
        positions.setdefault(offer["id"], []).append(i)
        positions.setdefault(offer["sku"], []).append(i)
    return _Region(
        index=index,
        candidates=np.array([items.get(o["sku"].upper(), 0) for o in offers], dtype=np.int64),
        penalty=np.array([0.0 if o["stock"] > 0 and o["price"] > 0 else -np.inf for o in offers], dtype=np.float32),
        offer_ids=[o["id"] for o in offers],
        positions=positions,
    )


def _profile_row(items: np.ndarray, ages: np.ndarray, width: int, decay_days: float) -> tuple[int, list[np.ndarray]]:
    """A profile graph's row for a list of events: per known item its count, days since its last and its first
    event and its decayed frequency, the `width` strongest kept, strongest last (models/encoding.py's order:
    by decayed frequency, ties by item index)."""
    known = items > 0
    ages64 = ages[known].astype(np.float64)
    slots, inverse, counts = np.unique(items[known], return_inverse=True, return_counts=True)
    decayed = np.zeros(len(slots))
    np.add.at(decayed, inverse, np.exp(ages64 * (-1.0 / decay_days)))  # in event order, as the edge sums
    since_last = np.full(len(slots), np.inf)
    np.minimum.at(since_last, inverse, ages64)
    since_first = np.zeros(len(slots))
    np.maximum.at(since_first, inverse, ages64)
    keep = np.lexsort((slots, decayed))[len(slots) - min(width, len(slots)) :]
    filled = len(keep)
    row = [np.zeros(width, dtype=np.int64), *(np.zeros(width, dtype=np.float32) for _ in range(4))]
    for array, values in zip(row, (slots, counts, since_last, since_first, decayed)):
        array[width - filled :] = values[keep]
    return filled, row


def _answer(region: _Region, scores: np.ndarray, positions: np.ndarray, k: int) -> Answer:
    keep = (scores > -np.inf) & (positions < len(region.candidates))
    scores, positions = scores[keep][:k], positions[keep][:k]
    return Answer([region.offer_ids[p] for p in positions.tolist()], scores.astype(np.float32))
