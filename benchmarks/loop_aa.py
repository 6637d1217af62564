"""A/A runs of the learning loop in process: both arms the same model, the pipeline's look (edgerec.cli.pipeline_rules)
on the origin's own report (origin_sync.origin.analysis) after every batch of traffic. Counts how often the
sequential test it decides by finds a false winner (or loser), against the fixed-horizon test peeked at as often."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from edgerec.cli.pipeline_rules import CANDIDATE, CONTROL, PROMOTE, STOP, Policy, look
from origin_sync.origin.analysis import build_report
from origin_sync.origin.sequential import DEFAULT_TUNING_N


def report_of(
    counts: dict[str, tuple[int, int]], tuning_n: int = DEFAULT_TUNING_N, share: float = 0.5
) -> dict[str, Any]:
    """The origin's experiment report of cumulative (impressions, conversions) per variant, the candidate's weight
    `share` (as the pipeline's experiments weigh their variants)."""
    experiment = {
        "id": "aa",
        "variants": [
            {"name": CONTROL, "weight": round((1 - share) * 1000, 3), "model": None},
            {"name": CANDIDATE, "weight": round(share * 1000, 3)},
        ],
    }
    rows = [
        {"variant": v, "region": "GB", "impressions": n, "clicked": 0, "carted": 0, "converted": c}
        for v, (n, c) in counts.items()
    ]
    return build_report(experiment, {"variants": rows, "revenue": [], "unattributed": {}}, tuning_n=tuning_n)


def aa_run(
    rng: np.random.Generator,
    policy: Policy,
    looks: int,
    per_look: int,
    rate: float,
    tuning_n: int = DEFAULT_TUNING_N,
    share: float = 0.5,
) -> tuple[int | None, int | None]:
    """One A/A experiment: (the first look at which the pipeline decided on a difference, the first look at which
    the fixed-horizon p-value fell under alpha); None where it never did."""
    n = {CONTROL: 0, CANDIDATE: 0}
    c = {CONTROL: 0, CANDIDATE: 0}
    sequential_at: int | None = None
    fixed_at: int | None = None
    for at in range(looks):
        to_candidate = int(rng.binomial(per_look, share))
        for variant, arrived in ((CONTROL, per_look - to_candidate), (CANDIDATE, to_candidate)):
            n[variant] += arrived
            c[variant] += int(rng.binomial(arrived, rate))
        report = report_of({v: (n[v], c[v]) for v in n}, tuning_n, share)
        decision, outcome, evidence = look(report, 0, 0.0, policy)
        if sequential_at is None and (decision == PROMOTE or (decision == STOP and outcome == "loss")):
            sequential_at = at
        p = evidence["fixed_horizon_p_value"]
        if fixed_at is None and p is not None and p < policy.alpha:
            fixed_at = at
    return sequential_at, fixed_at


def wilson(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson interval of a proportion."""
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def aa_study(
    policy: Policy, runs: int, looks: int, per_look: int, rate: float, tuning_n: int, seed: int = 2026
) -> dict[str, Any]:
    """`runs` A/A experiments of `looks` looks of `per_look` impressions each, split as the pipeline's first stage
    splits: the false-winner rates of both tests, with their 95% intervals, and how each grows with the looks."""
    from tqdm import tqdm

    rng = np.random.default_rng(seed)
    share = policy.stages[0]
    firsts = [
        aa_run(rng, policy, looks, per_look, rate, tuning_n, share)
        for _ in tqdm(range(runs), desc="A/A runs", unit=" run", mininterval=2.0)
    ]
    sequential = sum(s is not None for s, _ in firsts)
    fixed = sum(f is not None for _, f in firsts)
    by_look = {
        "sequential": [sum(s is not None and s <= at for s, _ in firsts) / runs for at in range(looks)],
        "fixed_peeking": [sum(f is not None and f <= at for _, f in firsts) / runs for at in range(looks)],
    }
    return {
        "runs": runs,
        "alpha": policy.alpha,
        "looks": looks,
        "impressions_per_look": per_look,
        "conversion_rate": rate,
        "candidate_share": share,
        "sequential_tuning_n": tuning_n,
        "false_winner_rate_sequential": sequential / runs,
        "false_winner_rate_sequential_ci95": list(wilson(sequential, runs)),
        "false_winner_rate_fixed_peeking": fixed / runs,
        "false_winner_rate_fixed_peeking_ci95": list(wilson(fixed, runs)),
        "false_winner_rate_by_look": by_look,
        "method": (
            "in process: the pipeline's look() on origin_sync.origin.analysis.build_report (the code the origin "
            "reports with), binomial traffic split as the first stage, one conversion rate for both arms; no edges"
        ),
        "seed": seed,
    }
