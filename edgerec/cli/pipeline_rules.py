"""The learning pipeline's rules, as pure functions of the evidence: the offline gate, and each look at a running
experiment (promote, stop, next stage, wait). Decisions while watching rest only on the report's always-valid
(sequential) test, never on its fixed-horizon p-values."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

from origin_sync.wire.health import quantile_ms

CONTROL, CANDIDATE = "served", "candidate"  # the experiment's variant names

# What a look at an experiment may decide.
WAIT, NEXT_STAGE, PROMOTE, STOP = "wait", "next_stage", "promote", "stop"


@dataclass(frozen=True)
class Policy:
    """Every threshold of the pipeline in one place; recorded with each round."""

    gate_margin: float = 0.01  # the candidate's NDCG@10 may trail the served model's by at most this on the week
    stages: tuple[float, ...] = (0.10, 0.50)  # the candidate's traffic share, stage by stage
    min_impressions: int = 500  # per variant, before the sequential test may decide
    stage_impressions: int = 20_000  # the candidate's impressions after which an undecided stage moves on
    max_stage_s: float = 7 * 86_400.0  # an open stage without min_impressions by then: not enough data
    alpha: float = 0.05
    min_health_answers: int = 50  # the candidate's answers before its health guardrails may fire
    max_fallback_increase: float = 0.02  # candidate's fallback rate minus the served model's, at most
    max_error_increase: float = 0.005  # candidate's model-error rate minus the served model's, at most
    max_p99_model_ms: float | None = None  # the candidate's p99 model time at the edges, at most (health counters)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def offline_gate(week: dict[str, Any], policy: Policy) -> tuple[bool, dict[str, Any]]:
    """The candidate passes when its NDCG@10 on the latest held-out week is not below the served model's by more
    than the margin. Without a served model to compare with, or shoppers in the week, it does not pass."""
    models = week.get("models", {})
    candidate, served = models.get(CANDIDATE), models.get(CONTROL)
    evidence: dict[str, Any] = {"metric": "ndcg@10", "margin": policy.gate_margin, "users": week.get("users", 0)}
    if candidate is None or served is None:
        return False, {**evidence, "reason": "no served model or no shoppers in the held-out week to compare with"}
    evidence |= {"candidate": candidate["ndcg@10"], "served": served["ndcg@10"]}
    evidence["difference"] = candidate["ndcg@10"] - served["ndcg@10"]
    passed = evidence["difference"] >= -policy.gate_margin
    evidence["reason"] = "within the margin" if passed else "worse than the served model by more than the margin"
    return passed, evidence


def _rate(part: float, whole: float) -> float | None:
    return part / whole if whole else None


def health_guardrails(health: dict[str, Any], policy: Policy) -> tuple[list[str], dict[str, Any]]:
    """The guardrails the candidate breaches on the edges' health counters (answers, fallbacks, model errors,
    model-time histogram per variant), and the figures."""
    mine, theirs = health.get(CANDIDATE) or {}, health.get(CONTROL) or {}
    answers = int(mine.get("answers", 0))
    figures: dict[str, Any] = {"answers": answers}
    if answers < policy.min_health_answers:
        return [], figures
    breached = []
    for name, limit in (("fallbacks", policy.max_fallback_increase), ("errors", policy.max_error_increase)):
        rate = _rate(mine.get(name, 0), answers) or 0.0
        base = _rate(theirs.get(name, 0), theirs.get("answers", 0)) or 0.0
        figures[f"{name}_rate"] = {"candidate": rate, "served": base, "limit_increase": limit}
        if rate - base > limit:
            breached.append(f"{name} rate {rate:.4f} against the served model's {base:.4f} (limit +{limit})")
    if policy.max_p99_model_ms is not None and mine.get("model_ms"):
        p99 = quantile_ms(list(mine["model_ms"]), 0.99)
        figures["p99_model_ms"] = {"candidate": p99, "limit": policy.max_p99_model_ms}
        if p99 is not None and p99 > policy.max_p99_model_ms:
            breached.append(f"p99 model time {p99:g} ms over {policy.max_p99_model_ms:g} ms")
    return breached, figures


def look(report: dict[str, Any], stage: int, stage_age_s: float, policy: Policy) -> tuple[str, str, dict[str, Any]]:
    """One look at the running stage's experiment report: (decision, outcome, evidence). Stop on a guardrail
    breach, a broken split, a significant loss or too little data for too long; promote on a significant win;
    move to the next stage (or keep the served model after the last) when the stage had its impressions without a
    decision; otherwise wait."""
    variants = report["variants"]
    candidate, control = variants[CANDIDATE], variants[CONTROL]
    tests = candidate["vs_control"]["sequential"]
    test = tests["conversion_cuped"] or tests["conversion"]  # the report's own choice (CUPED when it has one)
    p_value, difference = test["p_value"], test["difference"]
    significant = p_value is not None and p_value < policy.alpha and difference is not None
    evidence: dict[str, Any] = {
        "stage": stage,
        "share": policy.stages[stage],
        "impressions": {CONTROL: control["impressions"], CANDIDATE: candidate["impressions"]},
        "conversions": {CONTROL: control["conversions"], CANDIDATE: candidate["conversions"]},
        "sequential": {
            "method": report["sequential"]["method"],
            "cuped": tests["conversion_cuped"] is not None,
            "alpha": policy.alpha,
            "p_value": p_value,
            "difference": difference,
            "ci": [test["ci_low"], test["ci_high"]],
        },
        # For comparison only: valid at one planned look, never decided on here.
        "fixed_horizon_p_value": candidate["vs_control"]["conversion"]["p_value"],
        "sample_ratio": report["sample_ratio"],
    }
    breached, figures = health_guardrails(report.get("health") or {}, policy)
    evidence["health"] = figures
    if breached:
        return STOP, "guardrail", {**evidence, "reason": "; ".join(breached)}
    if report["sample_ratio"]["mismatch"]:
        return STOP, "guardrail", {**evidence, "reason": "sample ratio mismatch: the split is broken"}
    if min(candidate["impressions"], control["impressions"]) < policy.min_impressions:
        if stage_age_s >= policy.max_stage_s:
            return STOP, "not_enough_data", {**evidence, "reason": f"under {policy.min_impressions} impressions"}
        return WAIT, "collecting", {**evidence, "reason": f"under {policy.min_impressions} impressions a variant"}
    if significant and difference < 0:
        return STOP, "loss", {**evidence, "reason": "conversion significantly worse (mSPRT)"}
    if significant and difference > 0:
        return PROMOTE, "win", {**evidence, "reason": "conversion significantly better (mSPRT)"}
    if candidate["impressions"] >= policy.stage_impressions:
        if stage + 1 < len(policy.stages):
            return NEXT_STAGE, "inconclusive", {**evidence, "reason": "no significant difference at this share"}
        return STOP, "kept", {**evidence, "reason": "no significant difference at the last share: served model kept"}
    if stage_age_s >= policy.max_stage_s:
        return STOP, "kept", {**evidence, "reason": "no significant difference within the stage's time"}
    return WAIT, "watching", {**evidence, "reason": "no significant difference yet"}


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")


def parse_duration(text: str) -> float:
    """'24h', '90m', '30s', '7d' or plain seconds -> seconds."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"{text!r}: expected a duration like 30s, 90m, 24h or 7d")
    return float(match[1]) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86_400}[match[2]]
