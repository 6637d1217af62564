"""An experiment's report from per-variant counts: rates with 95% confidence intervals, two-proportion z-tests
against the control, revenue per impression per currency (never summed across currencies) with Welch tests, a
chi-square sample-ratio-mismatch check, and the always-valid (sequential) tests that decide while one watches."""

from __future__ import annotations

import math
from typing import Any, Callable

from scipy import stats

from .sequential import DEFAULT_TUNING_N, Moments, cuped, sequential_means, sequential_proportions

Z95 = 1.959963984540054
SRM_ALPHA = 0.001  # a sample ratio this unlikely means the split itself is broken: do not trust the results


def normal_sf(z: float) -> float:
    """P(Z > z) for a standard normal."""
    return float(stats.norm.sf(z))


def chi2_sf(x: float, dof: int) -> float:
    """P(X > x) for a chi-square with `dof` degrees of freedom."""
    return float(stats.chi2.sf(x, dof))


def proportion(successes: int, n: int) -> dict[str, float | None]:
    """Rate and its 95% Wilson interval (sound near 0, where CTR and conversion live)."""
    if n == 0:
        return {"rate": None, "ci_low": None, "ci_high": None}
    p = successes / n
    denom = 1 + Z95**2 / n
    centre = (p + Z95**2 / (2 * n)) / denom
    half = Z95 * math.sqrt(p * (1 - p) / n + Z95**2 / (4 * n * n)) / denom
    return {"rate": p, "ci_low": max(0.0, centre - half), "ci_high": min(1.0, centre + half)}


def two_proportion_z(s1: int, n1: int, s2: int, n2: int) -> dict[str, float | None]:
    """Pooled two-proportion z-test of variant (2) against control (1); two-sided p-value."""
    if n1 == 0 or n2 == 0:
        return {"z": None, "p_value": None}
    pooled = (s1 + s2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if se == 0:
        return {"z": 0.0, "p_value": 1.0}
    z = (s2 / n2 - s1 / n1) / se
    return {"z": z, "p_value": 2 * normal_sf(abs(z))}


def mean_ci(total: float, total_sq: float, n: int) -> dict[str, float | None]:
    """Mean per impression with a 95% normal interval (revenue per impression)."""
    if n == 0:
        return {"mean": None, "ci_low": None, "ci_high": None}
    mean = total / n
    if n == 1:  # one impression says nothing about the spread: no interval (rather than a zero-width one)
        return {"mean": mean, "ci_low": None, "ci_high": None}
    variance = max(0.0, total_sq / n - mean * mean) * n / (n - 1)
    half = Z95 * math.sqrt(variance / n)
    return {"mean": mean, "ci_low": mean - half, "ci_high": mean + half}


def sample_ratio_check(observed: list[int], weights: list[float]) -> dict[str, Any]:
    """Chi-square goodness of fit of the impressions per variant against the traffic weights."""
    total = sum(observed)
    if total == 0 or len(observed) < 2:
        return {"chi2": None, "p_value": None, "mismatch": False}
    expected = [total * w / sum(weights) for w in weights]
    chi2 = sum((o - e) ** 2 / e for o, e in zip(observed, expected) if e > 0)
    p_value = chi2_sf(chi2, len(observed) - 1)
    return {"chi2": chi2, "p_value": p_value, "mismatch": p_value < SRM_ALPHA}


def two_mean_z(total1: float, sq1: float, n1: int, total2: float, sq2: float, n2: int) -> dict[str, float | None]:
    """Welch's test of variant (2) against control (1) on a mean per impression (revenue), in its large-sample
    normal form (as the intervals of mean_ci); two-sided p-value."""
    if n1 < 2 or n2 < 2:
        return {"z": None, "p_value": None}
    m1, m2 = total1 / n1, total2 / n2
    var1 = max(0.0, sq1 / n1 - m1 * m1) * n1 / (n1 - 1)
    var2 = max(0.0, sq2 / n2 - m2 * m2) * n2 / (n2 - 1)
    se = math.sqrt(var1 / n1 + var2 / n2)
    if se == 0:
        return {"z": 0.0, "p_value": 1.0} if m1 == m2 else {"z": None, "p_value": None}
    z = (m2 - m1) / se
    return {"z": z, "p_value": 2 * normal_sf(abs(z))}


NO_CURRENCY = "unknown"  # the currency key of purchases sent without one


def _revenue_by_currency(counts: dict[str, Any]) -> tuple[dict[str, dict[str, dict[str, float]]], dict[str, set[str]]]:
    """{currency: {variant: {purchases, revenue, revenue_sq}}} and {currency: regions whose impressions led to a
    purchase in it}."""
    revenue: dict[str, dict[str, dict[str, float]]] = {}
    regions: dict[str, set[str]] = {}
    for row in counts.get("revenue", ()):
        currency = row.get("currency") or NO_CURRENCY
        cell = revenue.setdefault(currency, {}).setdefault(
            row["variant"], {"purchases": 0, "revenue": 0.0, "revenue_sq": 0.0}
        )
        cell["purchases"] += int(row.get("purchases", 0))
        cell["revenue"] += float(row.get("revenue") or 0.0)
        cell["revenue_sq"] += float(row.get("revenue_sq") or 0.0)
        regions.setdefault(currency, set()).add(row["region"])
    return revenue, regions


def _leader(
    variants: dict[str, Any],
    control: str,
    value: Callable[[str], float | None],
    p_value_vs_control: Callable[[str], float | None],
) -> tuple[str, float | None]:
    """The variant with the highest value, and the p-value that decides whether its lead is real: against the
    control, or, when the control leads, of the best challenger against it."""
    best = max(variants, key=lambda v: value(v) or 0.0)
    if best != control:
        return best, p_value_vs_control(best)
    challenger = max((v for v in variants if v != control), key=lambda v: value(v) or 0.0)
    return best, p_value_vs_control(challenger)


def build_report(
    experiment: dict[str, Any], counts: dict[str, Any], alpha: float = 0.05, tuning_n: int = DEFAULT_TUNING_N
) -> dict[str, Any]:
    """The report of one experiment from its sink's counts (EventSink.experiment_counts): per variant (the control
    first) its rates and their tests against the control; the winner on conversion when its difference is
    significant and the split is sound.

    Revenue is never summed across currencies: per currency, revenue per impression (with its 95% interval) is
    that currency's revenue over the variant's impressions in the regions where purchases were made in it, and it
    is tested against the control per currency (Welch), with its own leader and winner."""
    control = experiment["variants"][0]["name"]
    totals: dict[str, dict[str, int]] = {}
    by_region: dict[str, dict[str, int]] = {}
    for row in counts.get("variants", ()):
        t = totals.setdefault(row["variant"], {"impressions": 0, "clicked": 0, "carted": 0, "converted": 0})
        for key in t:
            t[key] += int(row.get(key, 0))
        region_counts = by_region.setdefault(row["variant"], {})
        region_counts[row["region"]] = region_counts.get(row["region"], 0) + int(row.get("impressions", 0))
    revenue, currency_regions = _revenue_by_currency(counts)
    currencies = sorted(revenue)

    def base(variant: str, currency: str) -> int:
        return sum(by_region.get(variant, {}).get(r, 0) for r in currency_regions[currency])

    def cell(currency: str, variant: str) -> dict[str, float]:
        return revenue[currency].get(variant, {"purchases": 0, "revenue": 0.0, "revenue_sq": 0.0})

    variants: dict[str, Any] = {}
    c0 = totals.get(control, {})
    for variant in experiment["variants"]:
        name = variant["name"]
        c = totals.get(name, {})
        n = int(c.get("impressions", 0))
        entry: dict[str, Any] = {
            "weight": variant["weight"],
            "model": variant.get("model"),
            "impressions": n,
            "clicks": int(c.get("clicked", 0)),
            "add_to_carts": int(c.get("carted", 0)),
            "conversions": int(c.get("converted", 0)),
            "ctr": proportion(int(c.get("clicked", 0)), n),
            "conversion": proportion(int(c.get("converted", 0)), n),
            # Per currency, never one sum across currencies.
            "revenue": {cur: cell(cur, name)["revenue"] for cur in currencies},
            "revenue_per_impression": {
                cur: {
                    **mean_ci(cell(cur, name)["revenue"], cell(cur, name)["revenue_sq"], base(name, cur)),
                    "impressions": base(name, cur),
                    "purchases": int(cell(cur, name)["purchases"]),
                }
                for cur in currencies
            },
        }
        if name != control:
            n0 = int(c0.get("impressions", 0))
            entry["vs_control"] = {
                "ctr": two_proportion_z(int(c0.get("clicked", 0)), n0, int(c.get("clicked", 0)), n),
                "conversion": two_proportion_z(int(c0.get("converted", 0)), n0, int(c.get("converted", 0)), n),
            }
            base_rate, rate = entry_rate(c0, "converted"), entry_rate(c, "converted")
            entry["vs_control"]["conversion_uplift"] = (
                (rate / base_rate - 1) if base_rate and rate is not None else None
            )
            by_currency = {}
            for cur in currencies:
                mine, theirs = entry["revenue_per_impression"][cur], cell(cur, control)
                test = two_mean_z(
                    theirs["revenue"],
                    theirs["revenue_sq"],
                    base(control, cur),
                    cell(cur, name)["revenue"],
                    cell(cur, name)["revenue_sq"],
                    base(name, cur),
                )
                control_mean = theirs["revenue"] / base(control, cur) if base(control, cur) else None
                test["uplift"] = (
                    (mine["mean"] / control_mean - 1) if control_mean and mine["mean"] is not None else None
                )
                by_currency[cur] = test
            entry["vs_control"]["revenue_per_impression"] = by_currency
            # Always valid at every look: what a decision taken while watching may rest on.
            moments = counts.get("cuped") or {}
            entry["vs_control"]["sequential"] = {
                "conversion": sequential_proportions(
                    int(c0.get("converted", 0)), n0, int(c.get("converted", 0)), n, alpha, tuning_n
                ),
                "conversion_cuped": cuped(
                    Moments.from_dict(moments[control]), Moments.from_dict(moments[name]), alpha, tuning_n
                )
                if control in moments and name in moments
                else None,
                "revenue_per_impression": {
                    cur: sequential_means(
                        cell(cur, control)["revenue"],
                        cell(cur, control)["revenue_sq"],
                        base(control, cur),
                        cell(cur, name)["revenue"],
                        cell(cur, name)["revenue_sq"],
                        base(name, cur),
                        alpha,
                        tuning_n,
                    )
                    for cur in currencies
                },
            }
        variants[name] = entry
    srm = sample_ratio_check(
        [variants[v["name"]]["impressions"] for v in experiment["variants"]],
        [v["weight"] for v in experiment["variants"]],
    )

    best, p_value = _leader(
        variants,
        control,
        lambda v: variants[v]["conversion"]["rate"],
        lambda v: variants[v]["vs_control"]["conversion"]["p_value"],
    )
    uplift = variants[best]["vs_control"]["conversion_uplift"] if best != control else 0.0
    significant = p_value is not None and p_value < alpha and not srm["mismatch"]

    revenue_tests: dict[str, Any] = {}
    for cur in currencies:
        leader, p = _leader(
            variants,
            control,
            lambda v, cur=cur: variants[v]["revenue_per_impression"][cur]["mean"],
            lambda v, cur=cur: variants[v]["vs_control"]["revenue_per_impression"][cur]["p_value"],
        )
        sound = p is not None and p < alpha and not srm["mismatch"]
        revenue_tests[cur] = {
            "regions": sorted(currency_regions[cur]),
            "leader": leader,
            "winner": leader if sound else None,
            "significant": sound,
            "p_value": p,
            "uplift": variants[leader]["vs_control"]["revenue_per_impression"][cur]["uplift"]
            if leader != control
            else 0.0,
        }
    sequential = {**_sequential_decision(variants, control, alpha, srm["mismatch"]), "tuning_n": tuning_n}
    unattributed = {k: int(v) for k, v in sorted((counts.get("unattributed") or {}).items())}
    return {
        "experiment": experiment["id"],
        "control": control,
        "variants": variants,
        "sample_ratio": srm,
        "winner": best if significant else None,
        "leader": best,
        "significant": significant,
        "uplift": uplift,
        "p_value": p_value,
        "alpha": alpha,
        "currencies": currencies,
        "revenue_by_currency": revenue_tests,
        "sequential": sequential,
        "unattributed": sum(unattributed.values()),
        # The edges' health counters per variant (answers, fallbacks, model errors, model-time histogram).
        "health": counts.get("health") or {},
        "unattributed_by_kind": unattributed,
    }


def _sequential_decision(variants: dict[str, Any], control: str, alpha: float, mismatch: bool) -> dict[str, Any]:
    """On conversion, by the always-valid test (CUPED's when the pre-period is known): the variants whose
    confidence sequence lies wholly above the control's (winners) or wholly below (losers)."""
    winners, losers, tests = [], [], {}
    for name, entry in variants.items():
        if name == control:
            continue
        test = entry["vs_control"]["sequential"]["conversion_cuped"] or entry["vs_control"]["sequential"]["conversion"]
        tests[name] = test
        if test["p_value"] is None or test["p_value"] >= alpha or mismatch:
            continue
        (winners if test["difference"] > 0 else losers).append(name)
    best = max(winners, key=lambda v: tests[v]["difference"]) if winners else None
    return {
        "method": "mSPRT",
        "metric": "conversion",
        "winner": best,
        "winners": winners,
        "losers": losers,
        "significant": best is not None,
        "p_values": {v: t["p_value"] for v, t in tests.items()},
    }


def entry_rate(counts: dict[str, Any], key: str) -> float | None:
    n = int(counts.get("impressions", 0))
    return int(counts.get(key, 0)) / n if n else None
