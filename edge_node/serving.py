"""The recommendation walk, one function a step and in this order, each returning a frozen value the next takes:
parse and validate (edge_node.validation) → resolve_region → find_profile → shopper_context → candidates (and the
rule mask) → score (batched, edge_node.batching) → rank (rules and fallback) → render. edge_node.recommendations
runs it."""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import numpy as np
import orjson
from msgspec import Struct

from models.profile import Profile as HistoryProfile

from .batching import (
    LATENCY_BUDGET,
    MODEL_ERROR,
    NOTHING_TO_SCORE,
    InferenceBatcher,
    ScoreRequest,
    Scores,
)
from .catalog import RegionCatalog
from .cdn import CdnPolicy
from .profiles import Profile
from .rules import Rules, diversify, drop_ruled_out
from .shoppers import HitInput, HitInputs, ShopperProfiles, cart_of, recent_events, skus
from .state import EdgeState
from .validation import RecommendationRequest, RequestError

log = logging.getLogger("edgerec.edge")

_FLOAT_MAX = float(np.finfo(np.float64).max)  # NaN and the infinities fall outside [-max, max]


def resolve_region(requested: str | None, country: str | None, state: EdgeState, cdn: CdnPolicy) -> str:
    """The one region the request is answered and recorded in: the request's own, else the market of the trusted
    CDN's country, else the edge's only region; 422 when that leaves a choice, 404 when it is not served here."""
    region = requested if requested is not None else cdn.market_of(country) if country is not None else None
    if region is None:
        if len(state.catalogs) == 1:
            return next(iter(state.catalogs))
        raise RequestError(
            422, "region_required", f"this edge serves {', '.join(sorted(state.catalogs))}; say which in 'region'"
        )
    if region not in state.catalogs:
        raise RequestError(
            404,
            "unknown_region",
            f"region {region!r} is not served here; this edge serves {', '.join(sorted(state.catalogs))}",
        )
    return region


PROFILE_HIT = "hit"  # the edge's stored profile of the shopper personalized the answer
PROFILE_MISS = "miss"  # nothing did: no shopper id, an unknown one, or the store did not answer in time
PROFILE_REQUEST = "request"  # the request's own recent_items did (the store is then not read)


async def find_profile(request: RecommendationRequest, profiles: ShopperProfiles | None) -> Profile | None:
    """The shopper's stored profile, read only for a shopper id sent without recent_items: memory, the local
    file or the region's Redis within its bounded wait (edge_node.profiles); None for every kind of miss."""
    if profiles is None or request.shopper_id is None or request.recent_items:
        return None
    return await profiles.lookup(request.shopper_id)


class ShopperContext(Struct, frozen=True):
    """What the edge knows of the shopper for this request: their purchase events (and the cart's items), most
    recent last, each one's age in days (None when no event carried one, NaN for an event without), where they
    came from (`profile`), and, from a stored profile, their whole history as a model that reads profiles takes
    it (`history`, built for this request alone) as of `now`."""

    items: tuple[str, ...]
    ages_days: tuple[float, ...] | None
    profile: str = PROFILE_MISS
    history: HistoryProfile | None = None
    now: float = 0.0
    hit: HitInput | None = None  # the stored profile's model input (edge_node.shoppers.HitInputs), with history


def shopper_context(
    request: RecommendationRequest,
    record: Profile | None = None,
    catalog: RegionCatalog | None = None,
    inputs: HitInputs | None = None,
) -> ShopperContext:
    """Precedence: the request's recent_items, when sent, are the shopper's events (the profile is not read);
    else the stored profile's purchases and its cart; else nothing (the anonymous path). The request's cart is
    added in every case, as bought now (so the just-bought rule keeps its items out of the answer)."""
    now = request.at if request.at is not None else time.time()
    cart = skus(request.cart, catalog) if request.cart else ()
    history = hit = None
    if request.recent_items:
        items, ages, source = request.recent_items, request.recent_ages_days, PROFILE_REQUEST
    elif record is not None:
        (items, ages), source = recent_events(record, now), PROFILE_HIT
        extra = (*cart_of(record, now), *((sku, now) for sku in cart))
        # The request's cart is folded at `now`, so only a cartless request can reuse a shopper's input.
        hit = inputs.get(record, extra) if inputs is not None and not cart else HitInput(record, extra)
        history = hit.history
    else:
        items, ages, source = (), None, PROFILE_MISS
    if cart:
        ages = (ages if ages is not None else (math.nan,) * len(items)) + (0.0,) * len(cart)
        items = items + cart
    return ShopperContext(items, ages, source, history, now, hit)


class Candidates(Struct, frozen=True):
    """The offers the request may be answered with, the model that scores them, and what the rules leave of them."""

    catalog: RegionCatalog
    model: Any  # models.runtime.Ranker: the served one, or an experiment variant's
    data_version: int
    experiment: str | None
    variant: str | None
    k: int
    max_per_group: int  # the diversity rule's limit; 0 = none
    want: int  # how many ranked positions to ask for (more than k when diversity may drop some)
    mask: np.ndarray  # float32 [N], read-only: -inf where a rule rules an offer out, its boost elsewhere
    profile: str = PROFILE_MISS  # the shopper context's source, for the answer


def candidates(
    state: EdgeState, region: str, request: RecommendationRequest, context: ShopperContext, rules: Rules
) -> Candidates:
    """The region's catalog and model (or an experiment variant's, by the shopper's bucket) and the rule mask."""
    catalog, model, max_per_group = state.catalogs[region], state.model, rules.max_per_group
    experiment = variant_name = None
    wall = time.time()
    if state.experiments is not None:
        # The wall clock decides the experiment's window, never the shopper's context.time.
        plan = state.experiments.running(region, wall)
        if plan is not None:
            if request.shopper_id is None:
                variant = plan.variants[0]  # anonymous shoppers get the control and are not enrolled
            else:
                variant = plan.variant_for(request.shopper_id)
                experiment, variant_name = plan.id, variant.name
            model, catalog = variant.model, variant.catalogs[region]
            if variant.max_per_group is not None:
                max_per_group = variant.max_per_group
    offer_rules = catalog.rules
    mask = offer_rules.mask(
        request.at if request.at is not None else wall,
        request.exclude,
        context.items,
        context.ages_days,
        rules.just_bought_days,
    )
    if not (max_per_group > 0 and offer_rules.has_groups):
        max_per_group = 0
    want = min(len(catalog), request.k * 4 if max_per_group else request.k)
    return Candidates(
        catalog,
        model,
        state.data_version,
        experiment,
        variant_name,
        request.k,
        max_per_group,
        want,
        mask,
        context.profile,
    )


async def score(chosen: Candidates, context: ShopperContext, batcher: InferenceBatcher, trace: Any = None) -> Scores:
    """The model's scores, in a run shared with the requests ready at the same time; or why there are none.
    `trace`: the context of the answer's span when it is traced (the run then adds its span there)."""
    if not len(chosen.catalog):
        return NOTHING_TO_SCORE
    if batcher.breaker.is_open(time.monotonic()):
        return LATENCY_BUDGET
    model = chosen.model
    try:
        if context.hit is not None and model.reads_profiles:
            encoded = context.hit.encode(model, context.now)
        elif context.history is not None and model.reads_profiles:
            encoded = model.encode_profile(context.history, context.now)
        else:
            encoded = model.request_context(context.items, ages_days=context.ages_days)
    except Exception:  # noqa: BLE001 - any failure of the model must still leave the shopper an answer
        log.exception("model %s cannot encode a request; answering from regional popularity", model.version)
        return MODEL_ERROR
    catalog = chosen.catalog
    scored: Scores = await batcher.submit(
        ScoreRequest(model, encoded, catalog.region_index, catalog.candidates, chosen.mask, chosen.want, trace)
    )
    return scored


class Answer(Struct, frozen=True):
    """The answer before rendering: the offers as positions into the catalog, best first, and their scores."""

    region: str
    model_version: str
    data_version: int
    fallback: str | None  # why the answer comes from regional popularity, None when the model ranked it
    experiment: str | None
    variant: str | None
    catalog: RegionCatalog
    positions: list[int]
    scores: list[float]
    model_s: float
    profile: str = PROFILE_MISS

    @property
    def offer_ids(self) -> list[str]:
        offer_ids = self.catalog.offer_ids
        return [offer_ids[p] for p in self.positions]

    def fields(self) -> dict[str, Any]:
        """The answer's fields but its offers and request_id (also what an impression records)."""
        return {
            "region": self.region,
            "model_version": self.model_version,
            "data_version": self.data_version,
            "fallback": self.fallback,
            "experiment": self.experiment,
            "variant": self.variant,
            "profile": self.profile,
        }


def rank(chosen: Candidates, scored: Scores) -> Answer:
    """The fallback, decided here only (regional popularity under the same rule mask, when the model did not score),
    then the rules that act on the ranking: diversity, and never an offer a rule ruled out."""
    catalog = chosen.catalog
    if scored.failure is not None:
        scores, positions = catalog.rank_by_popularity(chosen.mask, chosen.want)
    else:
        scores, positions = scored.scores, scored.positions  # type: ignore[assignment]
    scores_list, positions_list = scores.tolist(), positions.tolist()
    if chosen.max_per_group:
        kept = diversify(scores_list, positions_list, catalog.rules.groups, chosen.k, chosen.max_per_group)
        score_of = dict(zip(positions_list, scores_list))
        scores_list, positions_list = [score_of[p] for p in kept], kept
    else:
        scores_list, positions_list = drop_ruled_out(scores_list, positions_list)
    return Answer(
        catalog.region,
        chosen.model.version,
        chosen.data_version,
        scored.failure,
        chosen.experiment,
        chosen.variant,
        catalog,
        positions_list,
        scores_list,
        scored.model_s,
        chosen.profile,
    )


def render(answer: Answer, request_id: str | None) -> bytes:
    """The JSON answer, from each offer's pre-rendered fragment and its score with 6 decimals: no dict per offer,
    and printf formatting (0.15 µs a score; round() then orjson took 4 µs for 12 scores). A score that is not
    finite is written as null, as orjson writes it."""
    fragments = answer.catalog.fragments_json
    offers = b",".join(
        [
            b"%b%.6f}" % (fragments[p], s) if -_FLOAT_MAX <= s <= _FLOAT_MAX else fragments[p] + b"null}"
            for s, p in zip(answer.scores, answer.positions)
        ]
    )
    fields = answer.fields()
    fields["request_id"] = request_id
    return b'{"offers":[' + offers + b"]," + orjson.dumps(fields)[1:]
