"""Always-valid inference for experiments that are watched while they run: the mixture sequential probability ratio
test (mSPRT) with its confidence sequence, and CUPED's variance reduction with a pre-period covariate.

A fixed-horizon z-test is valid once, at a sample size fixed in advance; checked every hour it finds false winners
far more often than its alpha says. The mSPRT (Robbins 1970; Johari, Pekelis and Walsh, "Always valid inference",
2017 — Optimizely's Stats Engine) mixes the likelihood ratio of the difference over a normal prior N(0, tau^2).
Its p-value and interval stay valid at every look, however often one looks, and whenever one stops.

In the normal approximation, with the difference estimate d and its variance V:
    Lambda = sqrt(V / (V + tau^2)) * exp(tau^2 d^2 / (2 V (V + tau^2))),   p = min(1, 1 / Lambda)
and the (1 - alpha) confidence sequence is d +- sqrt(2 V (V + tau^2) / tau^2 * (log(1/alpha) + log((V + tau^2)/V) / 2)).
Computed from cumulative counts at each look, p = 1/Lambda is the look's always-valid p-value (the running minimum
over looks is smaller still, so reporting the current one is conservative).

tau is set on the effect's scale in units of one observation's standard deviation, tuned for the sample size at
which the test should be most powerful (GrowthBook's rule): rho^2 = (2 log(1/alpha) + log(2 log(1/alpha) + 1)) / N,
tau^2 = rho^2 * sigma^2, so the interval is narrowest near N units per variant.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

DEFAULT_TUNING_N = 5000  # units per variant at which the test is tuned to be most powerful


def mixing_variance(sigma2: float, alpha: float, tuning_n: int = DEFAULT_TUNING_N) -> float:
    """tau^2 on the effect's scale for observations of variance sigma2."""
    log_term = 2 * math.log(1 / alpha)
    return (log_term + math.log(log_term + 1)) / tuning_n * sigma2


def msprt(difference: float, variance: float, tau2: float, alpha: float) -> dict[str, float | None]:
    """Always-valid p-value and confidence sequence of a difference estimate with the given variance."""
    if variance <= 0 or tau2 <= 0 or not math.isfinite(difference):
        return {"p_value": None, "ci_low": None, "ci_high": None, "log_likelihood_ratio": None}
    total = variance + tau2
    log_lr = 0.5 * math.log(variance / total) + tau2 * difference * difference / (2 * variance * total)
    p_value = 1.0 if log_lr <= 0 else min(1.0, math.exp(-log_lr))
    half = math.sqrt(2 * variance * total / tau2 * (math.log(1 / alpha) + 0.5 * math.log(total / variance)))
    return {
        "p_value": p_value,
        "ci_low": difference - half,
        "ci_high": difference + half,
        "log_likelihood_ratio": log_lr,
    }


def sequential_proportions(
    s1: int, n1: int, s2: int, n2: int, alpha: float, tuning_n: int = DEFAULT_TUNING_N
) -> dict[str, float | None]:
    """mSPRT of rate 2 (variant) minus rate 1 (control), unpooled variance."""
    if n1 == 0 or n2 == 0:
        return {"difference": None, "p_value": None, "ci_low": None, "ci_high": None, "log_likelihood_ratio": None}
    p1, p2 = s1 / n1, s2 / n2
    variance = p1 * (1 - p1) / n1 + p2 * (1 - p2) / n2
    pooled = (s1 + s2) / (n1 + n2)
    result = msprt(p2 - p1, variance, mixing_variance(pooled * (1 - pooled), alpha, tuning_n), alpha)
    return {"difference": p2 - p1, **result}


def sequential_means(
    total1: float,
    sq1: float,
    n1: int,
    total2: float,
    sq2: float,
    n2: int,
    alpha: float,
    tuning_n: int = DEFAULT_TUNING_N,
) -> dict[str, float | None]:
    """mSPRT of mean 2 minus mean 1 (revenue per impression), Welch's variance."""
    if n1 < 2 or n2 < 2:
        return {"difference": None, "p_value": None, "ci_low": None, "ci_high": None, "log_likelihood_ratio": None}
    m1, m2 = total1 / n1, total2 / n2
    var1 = max(0.0, sq1 / n1 - m1 * m1) * n1 / (n1 - 1)
    var2 = max(0.0, sq2 / n2 - m2 * m2) * n2 / (n2 - 1)
    pooled = (var1 * (n1 - 1) + var2 * (n2 - 1)) / (n1 + n2 - 2)
    result = msprt(m2 - m1, var1 / n1 + var2 / n2, mixing_variance(pooled, alpha, tuning_n), alpha)
    return {"difference": m2 - m1, **result}


@dataclass(frozen=True, slots=True)
class Moments:
    """Sufficient statistics of one variant's units for CUPED: n, sums of y, x, y^2, x^2 and x*y, where y is the
    metric during the experiment and x the same unit's metric in the pre-period."""

    n: int
    y: float
    x: float
    yy: float
    xx: float
    xy: float

    @classmethod
    def of(cls, pairs: Any) -> Moments:
        n, y, x, yy, xx, xy = 0, 0.0, 0.0, 0.0, 0.0, 0.0
        for yi, xi in pairs:
            n += 1
            y += yi
            x += xi
            yy += yi * yi
            xx += xi * xi
            xy += xi * yi
        return cls(n, y, x, yy, xx, xy)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Moments:
        return cls(int(data["n"]), *(float(data[k]) for k in ("y", "x", "yy", "xx", "xy")))


def cuped(
    control: Moments, variant: Moments, alpha: float, tuning_n: int = DEFAULT_TUNING_N
) -> dict[str, float | None]:
    """CUPED (Deng, Xu, Kohavi and Walker, 2013): y - theta (x - mean x) with theta = cov(x, y) / var(x) over both
    variants, which keeps the difference unbiased (x is measured before assignment) and shrinks its variance by
    the factor 1 - corr(x, y)^2. Returns the adjusted difference with its mSPRT, and the variance reduction."""
    n = control.n + variant.n
    if control.n < 2 or variant.n < 2:
        return {
            "difference": None,
            "p_value": None,
            "ci_low": None,
            "ci_high": None,
            "theta": None,
            "variance_reduction": None,
            "log_likelihood_ratio": None,
        }
    mean_x = (control.x + variant.x) / n
    mean_y = (control.y + variant.y) / n
    cov = (control.xy + variant.xy) / n - mean_x * mean_y
    var_x = (control.xx + variant.xx) / n - mean_x * mean_x
    theta = cov / var_x if var_x > 0 else 0.0

    def adjusted(m: Moments) -> tuple[float, float]:
        """Mean and sample variance of y - theta * (x - mean_x) within one variant."""
        my, mx = m.y / m.n, m.x / m.n
        vy = m.yy / m.n - my * my
        vx = m.xx / m.n - mx * mx
        cxy = m.xy / m.n - mx * my
        variance = max(0.0, vy - 2 * theta * cxy + theta * theta * vx) * m.n / (m.n - 1)
        return my - theta * (mx - mean_x), variance

    (a1, v1), (a2, v2) = adjusted(control), adjusted(variant)
    raw1 = max(0.0, control.yy / control.n - (control.y / control.n) ** 2) * control.n / (control.n - 1)
    raw2 = max(0.0, variant.yy / variant.n - (variant.y / variant.n) ** 2) * variant.n / (variant.n - 1)
    variance = v1 / control.n + v2 / variant.n
    raw_variance = raw1 / control.n + raw2 / variant.n
    pooled = (v1 * (control.n - 1) + v2 * (variant.n - 1)) / (n - 2)
    result = msprt(a2 - a1, variance, mixing_variance(pooled, alpha, tuning_n), alpha)
    return {
        "difference": a2 - a1,
        **result,
        "theta": theta,
        "variance_reduction": 1 - variance / raw_variance if raw_variance > 0 else None,
    }
