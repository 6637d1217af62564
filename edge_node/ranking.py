"""From a validated request and the current state to the ranked offers: candidates, rules, ONNX ranker, fallback."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from .catalog import NEG_INF, NO_GROUP, RegionCatalog
from .state import EdgeState
from .validation import RecommendationRequest, RequestError

log = logging.getLogger("edgerec.edge")

FALLBACK_MODEL_ERROR = "model_error"
FALLBACK_LATENCY_BUDGET = "latency_budget"
_FLOAT_MAX = float(np.finfo(np.float64).max)  # NaN and the infinities fall outside [-max, max]


@dataclass(frozen=True)
class Rules:
    """Business rules the edge applies after scoring (configured per edge; offers carry boosts and groups)."""

    max_per_group: int = 0            # diversity: at most this many offers of one product group; 0 = no limit
    just_bought_days: float = 1.0     # exclude items the shopper bought this recently (needs age_days)
    model_budget_ms: float = 25.0     # a model run slower than this opens the breaker
    breaker_cooldown_s: float = 5.0   # how long answers come from the fallback after an overrun


class ModelBreaker:
    """Sends requests to the popularity fallback for a while after the model overran its latency budget."""

    __slots__ = ("budget_s", "cooldown_s", "open_until")

    def __init__(self, budget_ms: float, cooldown_s: float) -> None:
        self.budget_s = budget_ms / 1000.0
        self.cooldown_s = cooldown_s
        self.open_until = 0.0

    def is_open(self, now: float) -> bool:
        return now < self.open_until

    def record(self, run_s: float, now: float) -> None:
        if run_s > self.budget_s:
            self.open_until = now + self.cooldown_s
            log.warning("model run took %.1f ms, over its %.1f ms budget: fallback for %.1f s",
                        run_s * 1000, self.budget_s * 1000, self.cooldown_s)


@dataclass(slots=True)
class Ranked:
    """The answer before rendering, and what the request cost per stage."""

    meta: dict[str, Any]  # the answer's fields but its offers (and request_id): region, versions, fallback, ...
    catalog: RegionCatalog
    positions: list[int]  # into the catalog, best first
    scores: list[float]   # of those positions
    model_s: float
    fallback: str | None

    def render(self, request_id: str | None) -> bytes:
        """The JSON answer, from each offer's pre-rendered fragment and its score with 6 decimals: no dict per
        offer, and printf formatting (0.15 µs a score; round() then orjson took 4 µs for 12 scores). A score
        that is not finite is written as null, as orjson writes it."""
        parts = [b'{"offers":[']
        append = parts.append
        fragments = self.catalog.fragments_json
        for score, p in zip(self.scores, self.positions):
            append(fragments[p])
            append(b"%.6f}," % score if -_FLOAT_MAX <= score <= _FLOAT_MAX else b"null},")
        if self.scores:
            parts[-1] = parts[-1][:-1]  # the last offer's comma
        append(b"],")
        append(orjson.dumps({**self.meta, "request_id": request_id})[1:])
        return b"".join(parts)

    @property
    def body(self) -> dict[str, Any]:
        """The answer as a dict (what render() writes, less the request_id); for tests and tools, not the hot path."""
        body = orjson.loads(self.render(None))
        del body["request_id"]
        return body


def resolve_region(region: str | None, state: EdgeState) -> RegionCatalog:
    """The catalog the request is for: its own region if known, else the edge's only region."""
    if region is None:
        if len(state.catalogs) == 1:
            return next(iter(state.catalogs.values()))
        raise RequestError(422, "region_required",
                           f"this edge serves {', '.join(sorted(state.catalogs))}; say which in 'region'")
    catalog = state.catalogs.get(region)
    if catalog is None:
        raise RequestError(404, "unknown_region",
                           f"region {region!r} is not served here; this edge serves "
                           f"{', '.join(sorted(state.catalogs))}")
    return catalog


def _exclude(adjust: np.ndarray, catalog: RegionCatalog, request: RecommendationRequest, rules: Rules) -> None:
    positions = catalog.positions
    for key in request.exclude:
        for pos in positions.get(key, ()):
            adjust[pos] = NEG_INF
    ages = request.recent_ages_days
    if ages is not None and rules.just_bought_days > 0:
        for sku, age in zip(request.recent_items, ages):
            if age <= rules.just_bought_days:  # NaN (age not sent) compares False
                for pos in positions.get(sku, ()):
                    adjust[pos] = NEG_INF


def _diversify(scores: list[float], positions: list[int], groups: np.ndarray, k: int, limit: int) -> list[int]:
    """Keep the best-ranked offers, at most `limit` of any one product group (a greedy pass over a few dozen)."""
    kept: list[int] = []
    per_group: dict[int, int] = {}
    for score, pos in zip(scores, positions):
        if score == -np.inf:
            break
        group = int(groups[pos])
        if group != NO_GROUP:
            if per_group.get(group, 0) >= limit:
                continue
            per_group[group] = per_group.get(group, 0) + 1
        kept.append(pos)
        if len(kept) == k:
            break
    return kept


@dataclass(slots=True)
class Plan:
    """A request made ready for the model: the catalog and model it is answered from, what the rules leave of
    the catalog (adjust), and, once the model ran (or could not), its scores or the fallback's reason."""

    catalog: RegionCatalog
    model: Any  # models.runtime.Ranker: the served one, or an experiment variant's
    data_version: int
    experiment_id: str | None
    variant_name: str | None
    k: int
    max_per_group: int
    diverse: bool
    want: int  # how many ranked positions to ask for (more than k when diversity may drop some)
    adjust: np.ndarray | None  # float32 penalties per offer: -inf where a rule excludes it, boosts elsewhere
    context: Any  # models.runtime.RequestContext; None when the model is not to run
    fallback: str | None = None
    scores: np.ndarray | None = None
    positions: np.ndarray | None = None
    model_s: float = 0.0

    @property
    def needs_model(self) -> bool:
        return self.context is not None and self.fallback is None


def plan_request(request: RecommendationRequest, state: EdgeState, rules: Rules, breaker: ModelBreaker,
                 region: str | None) -> Plan:
    """Everything before the model: region, experiment variant, business rules, the encoded context."""
    catalog = resolve_region(region, state)
    model = state.model
    max_per_group = rules.max_per_group
    experiment_id = variant_name = None
    if state.experiments is not None:
        # The wall clock decides the experiment's window, never the shopper's context.time.
        plan = state.experiments.running(catalog.region, time.time())
        if plan is not None:
            if request.shopper_id is None:
                variant = plan.variants[0]  # anonymous shoppers get the control and are not enrolled
            else:
                variant = plan.variant_for(request.shopper_id)
                experiment_id, variant_name = plan.id, variant.name
            model, catalog = variant.model, variant.catalogs[catalog.region]
            if variant.max_per_group is not None:
                max_per_group = variant.max_per_group
    if len(request.recent_items) > model.context_length:
        raise RequestError(422, "invalid_request",
                           f"recent_items: at most {model.context_length} events (the model's context length), "
                           f"got {len(request.recent_items)}")
    planned = Plan(catalog=catalog, model=model, data_version=state.data_version, experiment_id=experiment_id,
                   variant_name=variant_name, k=request.k, max_per_group=max_per_group, diverse=False, want=0,
                   adjust=None, context=None)
    if len(catalog):
        now = request.at if request.at is not None else time.time()
        planned.adjust = adjust = catalog.adjust_at(now)
        _exclude(adjust, catalog, request, rules)
        planned.diverse = diverse = max_per_group > 0 and bool((catalog.groups != NO_GROUP).any())
        planned.want = min(len(catalog), request.k * 4 if diverse else request.k)
        if breaker.is_open(time.monotonic()):
            planned.fallback = FALLBACK_LATENCY_BUDGET
        else:
            try:
                planned.context = model.encode_context(request.recent_items, ages_days=request.recent_ages_days)
            except Exception:  # noqa: BLE001 - any failure of the model must still leave the shopper an answer
                log.exception("model %s cannot encode a request; answering from regional popularity", model.version)
                planned.fallback = FALLBACK_MODEL_ERROR
    return planned


def run_model(planned: Plan, breaker: ModelBreaker) -> None:
    """One request's own ONNX run (the anonymous path and tools; shoppers' requests go through edge_node.batching)."""
    if not planned.needs_model:
        return
    clock = time.perf_counter()
    try:
        planned.scores, planned.positions = planned.model.rank(
            planned.context, planned.catalog.region_index, planned.catalog.candidates, planned.adjust, planned.want)
    except Exception:  # noqa: BLE001 - any failure of the model must still leave the shopper an answer
        log.exception("model %s failed; answering from regional popularity", planned.model.version)
        planned.fallback = FALLBACK_MODEL_ERROR
    else:
        planned.model_s = time.perf_counter() - clock
        breaker.record(planned.model_s, time.monotonic())


def finish(planned: Plan) -> Ranked:
    """Everything after the model: the fallback's ranking if needed, diversity, the cut at excluded offers."""
    catalog = planned.catalog
    scores_list: list[float] = []
    positions_list: list[int] = []
    if len(catalog):
        if planned.fallback is not None or planned.scores is None:
            if planned.fallback is None:  # the model was never asked (no context): not expected, but say so
                planned.fallback = FALLBACK_MODEL_ERROR
            scores, positions = catalog.rank_by_popularity(planned.adjust, planned.want)
        else:
            scores, positions = planned.scores, planned.positions
        scores_list, positions_list = scores.tolist(), positions.tolist()
        if planned.diverse:
            positions_list = _diversify(scores_list, positions_list, catalog.groups, planned.k, planned.max_per_group)
            score_of = dict(zip(positions.tolist(), scores_list))
            scores_list = [score_of[p] for p in positions_list]
        else:
            cut = next((i for i, s in enumerate(scores_list) if s == -np.inf), len(scores_list))
            scores_list, positions_list = scores_list[:cut], positions_list[:cut]
    meta = {
        "region": catalog.region,
        "model_version": planned.model.version,
        "data_version": planned.data_version,
        "fallback": planned.fallback,
        "experiment": planned.experiment_id,
        "variant": planned.variant_name,
    }
    return Ranked(meta=meta, catalog=catalog, positions=positions_list, scores=scores_list,
                  model_s=planned.model_s, fallback=planned.fallback)


def rank(request: RecommendationRequest, state: EdgeState, rules: Rules, breaker: ModelBreaker,
         region: str | None) -> Ranked:
    """One request from start to answer, with its own model run."""
    planned = plan_request(request, state, rules, breaker, region)
    run_model(planned, breaker)
    return finish(planned)
