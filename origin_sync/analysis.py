"""An experiment's report from per-variant counts: rates with 95% confidence intervals, two-proportion z-tests
against the control, revenue per impression, and a chi-square sample-ratio-mismatch check."""

from __future__ import annotations

import math
from typing import Any

Z95 = 1.959963984540054
SRM_ALPHA = 0.001  # a sample ratio this unlikely means the split itself is broken: do not trust the results


def normal_sf(z: float) -> float:
    """P(Z > z) for a standard normal."""
    return 0.5 * math.erfc(z / math.sqrt(2))


def chi2_sf(x: float, dof: int) -> float:
    """P(X > x) for a chi-square with `dof` degrees of freedom (regularized upper incomplete gamma)."""
    if x <= 0:
        return 1.0
    a, half = dof / 2.0, x / 2.0
    if half < a + 1:  # series for the lower function
        term = total = 1.0 / a
        n = a
        for _ in range(10_000):
            n += 1
            term *= half / n
            total += term
            if term < total * 1e-15:
                break
        return max(0.0, 1.0 - total * math.exp(-half + a * math.log(half) - math.lgamma(a)))
    # continued fraction for the upper function (Lentz)
    tiny = 1e-300
    b = half + 1 - a
    c, d = 1 / tiny, 1 / b
    h = d
    for i in range(1, 10_000):
        an = -i * (i - a)
        b += 2
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1 / d
        delta = d * c
        h *= delta
        if abs(delta - 1) < 1e-15:
            break
    return min(1.0, math.exp(-half + a * math.log(half) - math.lgamma(a)) * h)


def proportion(successes: int, n: int) -> dict[str, float | None]:
    """Rate and its 95% Wilson interval (sound near 0, where CTR and conversion live)."""
    if n == 0:
        return {"rate": None, "ci_low": None, "ci_high": None}
    p = successes / n
    denom = 1 + Z95 ** 2 / n
    centre = (p + Z95 ** 2 / (2 * n)) / denom
    half = Z95 * math.sqrt(p * (1 - p) / n + Z95 ** 2 / (4 * n * n)) / denom
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
    variance = max(0.0, total_sq / n - mean * mean) * (n / (n - 1) if n > 1 else 0.0)
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


def build_report(experiment: dict[str, Any], counts: list[dict[str, Any]], alpha: float = 0.05) -> dict[str, Any]:
    """The report of one experiment: per variant (the control first) its rates and their tests against the
    control; the winner on conversion when its difference is significant and the split is sound."""
    by_name = {c["variant"]: c for c in counts}
    variants: dict[str, Any] = {}
    control = experiment["variants"][0]["name"]
    c0 = by_name.get(control, {})
    for variant in experiment["variants"]:
        c = by_name.get(variant["name"], {})
        n = int(c.get("impressions", 0))
        entry: dict[str, Any] = {
            "weight": variant["weight"], "model": variant.get("model"), "impressions": n,
            "clicks": int(c.get("clicked", 0)), "add_to_carts": int(c.get("carted", 0)),
            "conversions": int(c.get("converted", 0)), "revenue": float(c.get("revenue", 0.0)),
            "ctr": proportion(int(c.get("clicked", 0)), n),
            "conversion": proportion(int(c.get("converted", 0)), n),
            "revenue_per_impression": mean_ci(float(c.get("revenue", 0.0)), float(c.get("revenue_sq", 0.0)), n),
        }
        if variant["name"] != control:
            n0 = int(c0.get("impressions", 0))
            entry["vs_control"] = {
                "ctr": two_proportion_z(int(c0.get("clicked", 0)), n0, int(c.get("clicked", 0)), n),
                "conversion": two_proportion_z(int(c0.get("converted", 0)), n0, int(c.get("converted", 0)), n),
            }
            base, rate = entry_rate(c0, "converted"), entry_rate(c, "converted")
            entry["vs_control"]["conversion_uplift"] = (rate / base - 1) if base and rate is not None else None
        variants[variant["name"]] = entry
    srm = sample_ratio_check([variants[v["name"]]["impressions"] for v in experiment["variants"]],
                             [v["weight"] for v in experiment["variants"]])
    best = max(variants, key=lambda v: variants[v]["conversion"]["rate"] or 0.0)
    if best != control:
        test = variants[best]["vs_control"]
        p_value, uplift = test["conversion"]["p_value"], test["conversion_uplift"]
    else:  # the control leads: is it significantly better than the best challenger?
        challenger = max((v for v in variants if v != control),
                         key=lambda v: variants[v]["conversion"]["rate"] or 0.0)
        p_value, uplift = variants[challenger]["vs_control"]["conversion"]["p_value"], 0.0
    significant = p_value is not None and p_value < alpha and not srm["mismatch"]
    return {"experiment": experiment["id"], "control": control, "variants": variants, "sample_ratio": srm,
            "winner": best if significant else None, "leader": best, "significant": significant,
            "uplift": uplift, "p_value": p_value, "alpha": alpha}


def entry_rate(counts: dict[str, Any], key: str) -> float | None:
    n = int(counts.get("impressions", 0))
    return int(counts.get(key, 0)) / n if n else None


def plot_report(report: dict[str, Any], path: str) -> str:
    """A PNG: CTR, conversion and revenue per impression per variant with their 95% intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(report["variants"])
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.8))
    for ax, (key, label, field) in zip(axes, [("ctr", "CTR", "rate"), ("conversion", "conversion", "rate"),
                                               ("revenue_per_impression", "revenue / impression", "mean")]):
        values = [report["variants"][n][key][field] or 0.0 for n in names]
        lows = [v - (report["variants"][n][key]["ci_low"] or 0.0) for v, n in zip(values, names)]
        highs = [(report["variants"][n][key]["ci_high"] or 0.0) - v for v, n in zip(values, names)]
        ax.bar(names, values, yerr=[lows, highs], capsize=6, color=["#888888"] + ["#3b7dd8"] * (len(names) - 1))
        ax.set_title(f"{label} (95% CI)")
    fig.suptitle(f"experiment {report['experiment']}: winner {report['winner']} "
                 f"(p={report['p_value'] if report['p_value'] is None else round(report['p_value'], 4)})")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
