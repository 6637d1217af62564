"""Golden cases (requests with the numpy reference's expected answer) and the default event ages a bundle ships."""

from __future__ import annotations

import numpy as np

from models.bundle import golden_case, profile_history
from models.data import Transactions
from models.features import SLOT_FIELDS, ProfileSlots, RankingModel, rank_reference
from models.samples import HeldOut

K = 10
# Requests may send recent items without ages; each of the last this many positions has its own default.
DEFAULT_AGE_POSITIONS = 200


def _float32(slots: ProfileSlots) -> ProfileSlots:
    """The slots as the graph sees them: float fields rounded to float32."""
    return ProfileSlots(
        slots.items, *(getattr(slots, name).astype(np.float32).astype(np.float64) for name in SLOT_FIELDS[1:])
    )


def golden_cases(model: RankingModel, held_out: HeldOut, rng: np.random.Generator, count: int = 4) -> list[dict]:
    """Requests with expected outputs from the numpy reference; near-ties are skipped so order is stable."""
    item_count = len(model.statistics.vocabulary.items)
    cases: list[dict] = []
    for user in rng.permutation(len(held_out.regions)).tolist():
        if len(cases) == count:
            break
        slots = _float32(held_out.slots.row(user))
        if len(cases) == 1:  # half the slots as padding: the graph must ignore them
            half = model.slots // 2
            slots = ProfileSlots(
                *(np.where(np.arange(model.slots)[None, :] < half, 0, getattr(slots, name)) for name in SLOT_FIELDS)
            )
        size = 5 if len(cases) == 2 else min(40, item_count)
        candidates = rng.choice(np.arange(1, item_count + 1), size=size, replace=False)
        if len(cases) == 0:  # pins the repeat terms: some candidates come from the profile
            in_profile = np.unique(slots.items[slots.items > 0])[:5]
            candidates = np.unique(np.r_[candidates[: size - len(in_profile)], in_profile])
        candidates = np.r_[candidates, 0] if len(cases) == 3 else candidates  # pins the unknown item's score
        excluded = [] if len(cases) == 2 else sorted(rng.choice(len(candidates), 2, replace=False).tolist())
        penalty = np.zeros(len(candidates), dtype=np.float32)
        penalty[excluded] = -np.inf
        region = int(held_out.regions[user]) if len(cases) != 0 else 0
        scores, indices = rank_reference(model, slots, region, candidates, penalty, K)
        finite = scores[np.isfinite(scores)]
        full = np.sort(model.score_candidates(slots, region, candidates))[::-1]
        if len(finite) < len(scores) or (len(full) > 1 and np.min(np.abs(np.diff(full[: K + 3]))) < 1e-3):
            continue
        cases.append(
            golden_case(
                profile_history({name: getattr(slots, name)[0] for name in SLOT_FIELDS}),
                region,
                candidates,
                excluded,
                K,
                scores,
                indices,
            )
        )
    return cases


def default_ages(events: Transactions, cut: np.datetime64, length: int = DEFAULT_AGE_POSITIONS) -> np.ndarray:
    """float32 [length]: median age in days at the cut of the event at each position from a shopper's newest (last
    entry) back, over the shoppers with events before the cut; positions nobody reaches take the oldest median, so
    the defaults never decrease with age. For requests that send recent items without their ages."""
    before = events.select(events.invoiced_at < cut)  # sorted by customer, then time
    ages = (cut - before.invoiced_at) / np.timedelta64(1, "D")
    last_of_customer = np.r_[before.customer_id[1:] != before.customer_id[:-1], True]
    ends = np.flatnonzero(last_of_customer)
    starts = np.r_[0, ends[:-1] + 1]
    medians = np.full(length, np.nan)
    for back in range(length):  # back = 0 is each shopper's newest event
        positions = ends - back
        present = positions >= starts
        if not present.any():
            break
        medians[length - 1 - back] = np.median(ages[positions[present]])
    medians = np.where(np.isnan(medians), np.nanmax(medians) if np.isfinite(medians).any() else 0.0, medians)
    return np.maximum.accumulate(medians[::-1])[::-1].astype(np.float32)
