"""The edge's view of a model: load and verify a bundle, encode requests (profiles or recent items), rank candidates."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Sequence

import numpy as np
import onnxruntime

from models.bundle import (
    METADATA_FEATURE_SPEC,
    METADATA_VERSION,
    PROFILE_INPUTS,
    SLOT_INPUTS,
    BundleError,
    check_manifest,
    golden_feeds,
    read_bundle,
)
from models.encoding import (
    CaseInsensitiveSkus,
    RecentEvents,
    RequestContext,
    few_events_context,
    many_events_context,
)
from models.features import PreparedProfile, encode_prepared, encode_profile, prepare_columns, prepare_profile
from models.feeds import Request, context_width, padded_rows, ragged_slots, request_rows
from models.profile import Profile

__all__ = ["BundleError", "Profile", "Ranker", "RequestContext"]

GOLDEN_TOLERANCE = 1e-4
_FEW_EVENTS = 64  # up to this many recent items a request is summarised in plain Python, above in numpy

_telemetry_lock = threading.Lock()
_telemetry_disabled = False


def _disable_telemetry_once() -> None:
    global _telemetry_disabled
    with _telemetry_lock:
        if not _telemetry_disabled:
            onnxruntime.disable_telemetry_events()
            _telemetry_disabled = True


def _session_options() -> onnxruntime.SessionOptions:
    # One thread, no spinning: many replicas share a host, and a request is far too small to split.
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    return options


def _check_description(session: onnxruntime.InferenceSession, manifest: dict) -> None:
    """A model that describes itself (metadata_props, models/export.py) must describe the bundle it came in: its
    version and feature spec digest are the manifest's. Older models say nothing, and pass."""
    described = session.get_modelmeta().custom_metadata_map
    for key, field in ((METADATA_VERSION, "version"), (METADATA_FEATURE_SPEC, "feature_spec_sha256")):
        if key in described and described[key] != manifest.get(field):
            raise BundleError(
                f"model.onnx says {key} {described[key]!r}, the manifest's {field} is {manifest.get(field)!r}"
            )


class Ranker:
    """A verified, warmed-up ONNX ranker plus the manifest's vocabularies."""

    version: str
    manifest: dict
    context_length: int
    sha256: str

    def __init__(self, session: onnxruntime.InferenceSession, manifest: dict) -> None:
        self._session = session
        self.manifest = manifest
        self.version = str(manifest["version"])
        self.sha256 = str(manifest["sha256"])
        self.context_length = int(manifest["context_length"])
        # Ages for events that come without one: the median age of an event at that position in training.
        self._default_ages = np.asarray(manifest["default_ages_days"], dtype=np.float32)
        self._default_ages_list = self._default_ages.tolist()
        input_names = [graph_input.name for graph_input in session.get_inputs()]
        # Ragged graphs read the filled profile slots of a whole batch, padded ones [B, W] profile rows; context
        # graphs (bundles before 2026-12-04) read the last L events.
        self.ragged = input_names[0] == SLOT_INPUTS[0]
        self.reads_profiles = self.ragged or input_names[0] == "profile_items"
        self._row_names = PROFILE_INPUTS if self.reads_profiles else ("context_items", "context_ages_days")
        if self.reads_profiles and (self._default_ages.ndim != 1 or self._default_ages.size == 0):
            raise ValueError("default_ages_days is empty")
        if not self.reads_profiles and self._default_ages.shape != (self.context_length,):
            raise ValueError(
                f"default_ages_days has {self._default_ages.size} entries, context_length is {self.context_length}"
            )
        self._output_names = [output.name for output in session.get_outputs()]
        # A graph takes a batch of requests ([B, W] contexts, or a ragged graph's [S] slots with their rows);
        # bundles made before 2026-12 take one ([L]).
        context_shape = session.get_inputs()[0].shape
        self.batched = self.ragged or len(context_shape) == 2
        # Graphs since 2026-12-01 take a context of any width W <= L (the last W positions): runs then send only
        # the columns the widest context of the batch fills (a ragged graph, only the filled slots). Older graphs
        # take exactly L.
        self.trims_context = self.ragged or (self.batched and not isinstance(context_shape[1], int))
        self._scalars: dict[int, np.ndarray] = {}
        self._item_index = {str(code).upper(): position + 1 for position, code in enumerate(manifest["items"])}
        # Exact-case hits first (codes as the manifest has them, and in lower case); only a miss pays for .upper().
        self._item_lookup = {**{code.lower(): index for code, index in self._item_index.items()}, **self._item_index}
        self._profile_lookup = CaseInsensitiveSkus(self._item_lookup)
        self._region_index = {str(code).upper(): position + 1 for position, code in enumerate(manifest["regions"])}

    @classmethod
    def from_bytes(cls, onnx_bytes: bytes, manifest: dict) -> Ranker:
        """Verify hash, build the session, and pass every golden case; BundleError otherwise."""
        check_manifest(manifest, onnx_bytes)
        _disable_telemetry_once()
        try:
            session = onnxruntime.InferenceSession(
                onnx_bytes, sess_options=_session_options(), providers=["CPUExecutionProvider"]
            )
        except Exception as error:  # noqa: BLE001 (onnxruntime's pybind errors derive from Exception only)
            raise BundleError(f"onnxruntime cannot load model {manifest['version']}: {error}") from None
        _check_description(session, manifest)
        try:
            ranker = cls(session, manifest)
        except (KeyError, TypeError, ValueError) as error:
            raise BundleError(f"manifest field is malformed: {error!r}") from None
        ranker._check_golden()
        return ranker

    @classmethod
    def load(cls, bundle_dir: str | Path) -> Ranker:
        onnx_bytes, manifest = read_bundle(bundle_dir)
        return cls.from_bytes(onnx_bytes, manifest)

    def _check_golden(self) -> None:
        # Also the warm-up: the first runs allocate ORT's buffers before any shopper waits on them.
        cases = self.manifest["golden"]
        for number, case in enumerate(cases):
            try:
                if self.ragged:  # a golden case is one request's profile row: ragged, its slots
                    feed = golden_feeds(case, batched=False)
                    request = (self._feed_context(feed), int(feed["region"][0]), feed["candidates"], feed["penalty"])
                    scores, indices = self._rank_batch([request], int(feed["k"][0]))[0]
                else:
                    scores, indices = self._session.run(None, golden_feeds(case, self.batched))
                    if self.batched:
                        scores, indices = scores[0], indices[0]
            except Exception as error:  # noqa: BLE001 (onnxruntime's pybind errors derive from Exception only)
                raise BundleError(f"golden case {number} of {self.version} cannot run: {error}") from None
            self._compare_golden(f"golden case {number}", case, scores, indices)
        if self.batched and len(cases) > 1:
            # Shoppers are served in batches: every case again, all in one run, padded to the longest.
            try:
                feeds = [golden_feeds(case, batched=False) for case in cases]
                k = max(int(feed["k"][0]) for feed in feeds)
                results = self.rank_many(
                    [(self._feed_context(f), int(f["region"][0]), f["candidates"], f["penalty"]) for f in feeds], k
                )
            except Exception as error:  # noqa: BLE001 (onnxruntime's pybind errors derive from Exception only)
                raise BundleError(f"golden cases of {self.version} cannot run as one batch: {error}") from None
            for number, (case, feed, (scores, indices)) in enumerate(zip(cases, feeds, results)):
                keep = min(int(feed["k"][0]), len(feed["candidates"]))
                self._compare_golden(f"golden case {number} in a batch", case, scores[:keep], indices[:keep])

    def _feed_context(self, feed: dict[str, np.ndarray]) -> RequestContext:
        if not self.reads_profiles:
            return RequestContext(feed["context_items"], feed["context_ages_days"])
        items, counts, since_last, since_first, decayed = (feed[name] for name in PROFILE_INPUTS)
        return RequestContext(items, since_last, None, counts, since_first, decayed)

    def _compare_golden(self, what: str, case: dict, scores: np.ndarray, indices: np.ndarray) -> None:
        try:
            expected_scores = np.asarray(case["expected"]["scores"], dtype=np.float64)
            expected_indices = np.asarray(case["expected"]["indices"], dtype=np.int64)
        except (KeyError, TypeError, ValueError) as error:
            raise BundleError(f"{what} of {self.version} is malformed: {error}") from None
        if scores.shape != expected_scores.shape or not np.array_equal(indices, expected_indices):
            raise BundleError(f"{what} of {self.version}: ranked positions differ from expected")
        if not np.allclose(scores, expected_scores, rtol=0.0, atol=GOLDEN_TOLERANCE):
            worst = float(np.max(np.abs(scores - expected_scores)))
            raise BundleError(f"{what} of {self.version}: scores off by {worst:.3g} > {GOLDEN_TOLERANCE}")

    def item_index(self, sku: str) -> int:
        """Vocabulary index of a StockCode, 0 when unknown."""
        return self._item_index.get(sku.upper(), 0)

    def item_indices(self, skus: Sequence[str]) -> np.ndarray:
        get = self._item_lookup.get  # indices start at 1, so `or` only falls through on a miss
        return np.fromiter([get(sku) or get(sku.upper(), 0) for sku in skus], dtype=np.int64, count=len(skus))

    def region_index(self, region: str) -> int:
        """Index of a market code, 0 when unknown (the graph then uses global popularity)."""
        return self._region_index.get(region.upper(), 0)

    def encode_context(self, skus: Sequence[str], ages_days: Sequence[float] | None = None) -> RequestContext:
        """The last L items, most recent last, left-padded with 0, with each one's age in days.

        ages_days, when given, is aligned with skus (same length); a NaN, a missing list, or a negative
        age takes the manifest's default_ages_days for that position (the training median there).
        """
        if self.reads_profiles:
            if len(skus) <= _FEW_EVENTS:  # the common short request: lists all the way, no numpy round trips
                return few_events_context(self._few_indices(skus), self._few_ages(skus, ages_days), self.context_length)
            return self._events_context(self.item_indices(list(skus)), self._event_ages(skus, ages_days))
        length = self.context_length
        recent = list(skus)[-length:] if length else []
        items = np.zeros(length, dtype=np.int64)
        ages = self._default_ages.copy()
        if recent:
            items[length - len(recent) :] = self.item_indices(recent)
            if ages_days is not None:
                if len(ages_days) != len(skus):
                    raise ValueError(f"ages_days has {len(ages_days)} entries for {len(skus)} items")
                sent = np.asarray(ages_days[len(ages_days) - len(recent) :], dtype=np.float32)
                tail = ages[length - len(recent) :]
                tail[:] = np.where(sent >= 0, sent, tail)  # NaN >= 0 is False: NaN and negatives keep the default
        return RequestContext(items, ages, len(recent))

    def request_context(
        self, skus: Sequence[str], ages_days: Sequence[float] | None = None
    ) -> RequestContext | RecentEvents:
        """What a run takes for a request's events: for a ragged graph the events themselves, which rank_many
        summarises for the whole batch at once (the same slots as encode_context's, for a fraction of the cost);
        for other graphs encode_context. Raises ValueError as encode_context does."""
        if not self.ragged:
            return self.encode_context(skus, ages_days)
        return RecentEvents(self._few_indices(skus), None if ages_days is None else self._event_ages(skus, ages_days))

    def _few_indices(self, skus: Sequence[str]) -> list[int]:
        get = self._item_lookup.get
        return [get(sku) or get(sku.upper(), 0) for sku in skus]

    def _few_ages(self, skus: Sequence[str], ages_days: Sequence[float] | None) -> list[float]:
        """_event_ages as a list (float32-rounded like it), for short requests."""
        count, defaults = len(skus), self._default_ages_list
        shown = min(count, len(defaults))
        ages = [defaults[0]] * (count - shown) + defaults[len(defaults) - shown :]
        if ages_days is not None:
            if len(ages_days) != count:
                raise ValueError(f"ages_days has {len(ages_days)} entries for {count} items")
            sent = np.asarray(ages_days, dtype=np.float32).tolist()
            ages = [age if age >= 0 else default for age, default in zip(sent, ages)]  # NaN >= 0 is False
        return ages

    def _event_ages(self, skus: Sequence[str], ages_days: Sequence[float] | None) -> np.ndarray:
        """float32 ages of all the events: those sent (NaN or negative: the default), else the default of the
        position from the newest (positions past the defaults take the oldest)."""
        count, defaults = len(skus), self._default_ages
        ages = np.full(count, defaults[0], dtype=np.float32)
        shown = min(count, len(defaults))
        if shown:
            ages[count - shown :] = defaults[len(defaults) - shown :]
        if ages_days is not None:
            if len(ages_days) != count:
                raise ValueError(f"ages_days has {len(ages_days)} entries for {count} items")
            sent = np.asarray(ages_days, dtype=np.float32)
            ages = np.where(sent >= 0, sent, ages)  # NaN >= 0 is False: NaN and negatives keep the default
        return ages

    def _events_context(self, items: np.ndarray, ages: np.ndarray) -> RequestContext:
        """A profile graph's row for a list of events (item indices, ages in days): each known item's count, days
        since its last and first event and its decayed frequency, as a profile of those events holds them
        (models/profile.py), its strongest P items kept, strongest last."""
        width = self.context_length
        if len(items) <= _FEW_EVENTS:
            return few_events_context(items.tolist(), ages.tolist(), width)
        return many_events_context(items, ages, width)

    def encode_profile(self, profile: Profile, now: float) -> RequestContext:
        """A shopper's profile (models/profile.py) as of `now` (Unix seconds) as one row of a profile graph."""
        if not self.reads_profiles:
            raise ValueError(f"bundle {self.version} reads recent items, not profiles")
        items, counts, since_last, since_first, decayed = encode_profile(
            profile, now, self._profile_lookup, self.context_length
        )
        filled = int(np.count_nonzero(counts))
        return RequestContext(items, since_last, filled, counts, since_first, decayed)

    def prepare_profile(self, profile: Profile) -> PreparedProfile:
        """The time-independent part of `encode_profile` (models.features.prepare_profile), for this vocabulary."""
        return prepare_profile(profile, self._profile_lookup)

    def prepare_columns(
        self, skus: list[str], counts: list[int], first: list[float], last: list[float], decayed: list[float]
    ) -> PreparedProfile:
        """A profile given as columns (edge_node.shoppers.history_columns), prepared as `prepare_profile` would."""
        return prepare_columns(skus, counts, first, last, decayed, self._profile_lookup)

    def encode_prepared(self, prepared: PreparedProfile, now: float) -> RequestContext:
        """`encode_profile` of the profile `prepared` came from, equal to it bit for bit."""
        items, counts, since_last, since_first, decayed = encode_prepared(prepared, now, self.context_length)
        filled = min(len(prepared.items), self.context_length)  # every kept slot has a count of at least 1
        return RequestContext(items, since_last, filled, counts, since_first, decayed)

    def rank_profiles(
        self, requests: Sequence[tuple[Profile, int, np.ndarray, np.ndarray]], now: float, k: int
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Several (profile, region, candidates, penalty) requests at `now` (Unix seconds) in one run, as rank_many."""
        return self.rank_many(
            [(self.encode_profile(p, now), region, c, penalty) for p, region, c, penalty in requests], k
        )

    def rank(
        self,
        context: RequestContext | RecentEvents | np.ndarray,
        region: int,
        candidates: np.ndarray,
        penalty: np.ndarray,
        k: int,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(scores float32 [k'], positions into candidates int64 [k']), best first; k' = min(k, N).

        context is what encode_context, request_context or encode_profile returns; a bare int64 item array is taken
        as events (most recent last, 0 = none) with default ages.
        """
        if k <= 0 or len(candidates) == 0:
            return np.empty(0, dtype=np.float32), np.empty(0, dtype=np.int64)
        if not isinstance(context, (RequestContext, RecentEvents)):
            context = self._bare_context(np.asarray(context, dtype=np.int64))
        if self.batched:
            return self._rank_batch([(context, region, candidates, penalty)], k)[0]
        feeds = dict(zip(self._row_names, context.rows(0)))
        feeds.update(region=self._scalar(region), candidates=candidates, penalty=penalty, k=self._scalar(k))
        scores, positions = self._session.run(self._output_names, feeds)
        return scores, positions

    def _bare_context(self, items: np.ndarray) -> RequestContext:
        if self.reads_profiles:
            return self._events_context(items, self._event_ages(items, None))
        return RequestContext(items, self._default_ages)

    def context_width(self, contexts: Sequence[RequestContext]) -> int:
        """How many of the last context columns a padded run sends (models.feeds.context_width)."""
        return context_width(contexts, self.context_length, self.trims_context)

    def rank_many(self, requests: Sequence[Request], k: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """Several (context, region, candidates, penalty) requests in one run; for each, what rank() gives with k:
        best first, at most k, positions into its own candidates.

        Requests with fewer candidates than the longest are padded with the unknown item at penalty -inf, and
        padded slots are cut off here. So a padded slot can only take the place of an entry at -inf (an
        excluded offer): such a request gets the same finite entries as from rank(), and maybe fewer at -inf.
        """
        if not requests:
            return []
        if not self.batched:
            return [
                self.rank(context, region, candidates, penalty, k) for context, region, candidates, penalty in requests
            ]
        return self._rank_batch(requests, k)

    def _rank_batch(self, requests: Sequence[Request], k: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """rank_many for a batched graph: one run."""
        counts = [len(candidates) for _, _, candidates, _ in requests]
        width = max(counts)
        if k <= 0 or width == 0:
            return [(np.empty(0, dtype=np.float32), np.empty(0, dtype=np.int64)) for _ in requests]
        contexts = [context for context, _, _, _ in requests]
        if self.ragged:
            feeds = ragged_slots(contexts, self._default_ages, self.context_length, len(self._item_index) + 1)
        else:
            feeds = padded_rows(contexts, self._row_names, self.context_length, self.trims_context)
        feeds.update(request_rows(requests, width), k=self._scalar(k))
        scores, positions = self._session.run(self._output_names, feeds)
        results = []
        for row, count in enumerate(counts):
            if count == width:
                results.append((scores[row], positions[row]))
            else:
                own = positions[row] < count
                results.append((scores[row][own], positions[row][own]))
        return results

    def _scalar(self, value: int) -> np.ndarray:
        """A [1] int64 input, made once per value (regions and k take few values; the arrays are never written)."""
        array = self._scalars.get(value)
        if array is None:
            array = np.array([value], dtype=np.int64)
            array.flags.writeable = False
            if len(self._scalars) < 4096:
                self._scalars[value] = array
        return array
