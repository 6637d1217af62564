"""From a validated request and the current state to the ranked offers: candidates, rule mask, ONNX ranker, top-k."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from .state import NEG_INF, EdgeState, RegionCatalog
from .validation import RecommendationRequest, RequestError


def resolve_region(request: RecommendationRequest, state: EdgeState) -> RegionCatalog:
    """The catalog the request is for: its own region if sent, else the edge's only region."""
    if request.region is None:
        if len(state.catalogs) == 1:
            return next(iter(state.catalogs.values()))
        raise RequestError(422, "region_required",
                           f"this edge serves {', '.join(sorted(state.catalogs))}; say which in 'region'")
    catalog = state.catalogs.get(request.region)
    if catalog is None:
        raise RequestError(404, "unknown_region",
                           f"region {request.region!r} is not served here; this edge serves "
                           f"{', '.join(sorted(state.catalogs))}")
    return catalog


def recommend(request: RecommendationRequest, state: EdgeState) -> dict[str, Any]:
    catalog = resolve_region(request, state)
    offers: list[dict[str, Any]] = []
    if len(catalog):
        now = request.at if request.at is not None else time.time()
        penalty = catalog.penalty_at(now)
        for key in request.exclude:
            for pos in catalog.positions.get(key, ()):
                penalty[pos] = NEG_INF
        model = state.model
        context = model.encode_context(request.recent_items)
        scores, positions = model.rank(context, catalog.region_index, catalog.candidates, penalty, request.k)
        fragments = catalog.fragments
        for score, pos in zip(scores.tolist(), positions.tolist()):
            if score == -np.inf:
                break  # sorted descending: everything after is ruled out too
            offers.append({**fragments[pos], "score": round(score, 6)})
    return {
        "offers": offers,
        "region": catalog.region,
        "model_version": state.model.version,
        "data_version": state.data_version,
        "fallback": None,
    }
