"""Experiment definitions and the shopper-to-variant split: validated like offers, deterministic, and within
tolerance of the traffic weights."""

from __future__ import annotations

import pytest

from origin_sync.origin.analysis import (
    NO_CURRENCY,
    build_report,
    chi2_sf,
    proportion,
    sample_ratio_check,
    two_mean_z,
    two_proportion_z,
)
from origin_sync.origin.report_plot import plot_report, plot_title, report_figure
from origin_sync.wire.experiments import (
    BUCKETS,
    InvalidExperiment,
    assign,
    bucket_bounds,
    bucket_of,
    validate_experiment,
)


def experiment(**overrides):
    body = {
        "id": "exp-1",
        "variants": [
            {"name": "control", "weight": 50},
            {"name": "treatment", "weight": 50, "model": "m-2", "max_per_group": 2, "boosts": {"GB-1": 1.5}},
        ],
        "start": "2026-11-24T00:00:00Z",
        "end": None,
        "regions": ["GB"],
    }
    body.update(overrides)
    return body


def test_a_valid_experiment_is_returned_in_canonical_form():
    checked = validate_experiment(experiment(), "exp-1")
    assert checked["salt"] == "exp-1" and checked["regions"] == ["GB"] and checked["end"] is None
    assert checked["variants"][1] == {
        "name": "treatment",
        "weight": 50.0,
        "model": "m-2",
        "max_per_group": 2,
        "boosts": {"GB-1": 1.5},
    }
    assert isinstance(checked["start"], float)


@pytest.mark.parametrize(
    "bad, field",
    [
        ({"variants": [{"name": "only"}]}, "variants"),
        ({"variants": [{"name": "a"}, {"name": "a"}]}, "unique"),
        ({"variants": [{"name": "a", "weight": 0}, {"name": "b"}]}, "weight"),
        ({"variants": [{"name": "a"}, {"name": "b", "boosts": {"x": 1e9}}]}, "boosts"),
        ({"variants": [{"name": "a"}, {"name": "b", "colour": 1}]}, "unknown"),
        ({"start": "2026-12-01T00:00:00Z", "end": "2026-11-01T00:00:00Z"}, "end"),
        ({"regions": ["gbr"]}, "regions"),
        ({"id": "other"}, "path"),
        ({"salt": ""}, "salt"),
    ],
)
def test_an_invalid_experiment_is_refused_with_the_field_named(bad, field):
    with pytest.raises(InvalidExperiment, match=field):
        validate_experiment(experiment(**bad), "exp-1")


def test_the_split_is_deterministic_and_within_tolerance_of_the_weights():
    exp = validate_experiment(experiment(variants=[{"name": "a", "weight": 1}, {"name": "b", "weight": 3}]))
    shoppers = [f"shopper-{i}" for i in range(40_000)]
    first = [assign(exp, s) for s in shoppers]
    assert first == [assign(exp, s) for s in shoppers]  # same shopper, same variant, every time
    share_b = first.count("b") / len(first)
    assert abs(share_b - 0.75) < 0.01
    assert sample_ratio_check([first.count("a"), first.count("b")], [1, 3])["mismatch"] is False
    # Another salt reshuffles shoppers independently of the first split.
    other = validate_experiment(experiment(salt="other", variants=exp["variants"]))
    agree = sum(assign(other, s) == v for s, v in zip(shoppers, first)) / len(shoppers)
    assert abs(agree - (0.25**2 + 0.75**2)) < 0.02


def test_bucket_bounds_cover_every_bucket_once():
    assert bucket_bounds([1, 1]) == (5000, BUCKETS)
    assert bucket_bounds([1, 2, 1]) == (2500, 7500, BUCKETS)
    assert all(0 <= bucket_of("s", f"x{i}") < BUCKETS for i in range(1000))


def test_the_statistics_match_textbook_values():
    assert chi2_sf(3.841458820694124, 1) == pytest.approx(0.05, abs=1e-6)
    assert chi2_sf(5.991464547107979, 2) == pytest.approx(0.05, abs=1e-6)
    assert chi2_sf(30.0, 3) == pytest.approx(1.3800570312932524e-06, rel=1e-4)
    z = two_proportion_z(100, 1000, 130, 1000)
    assert z["z"] == pytest.approx(2.1027, abs=1e-3) and z["p_value"] == pytest.approx(0.0355, abs=1e-3)
    ci = proportion(10, 100)
    assert ci["ci_low"] == pytest.approx(0.0552, abs=1e-3) and ci["ci_high"] == pytest.approx(0.1744, abs=1e-3)


def test_a_report_names_a_significant_winner_and_flags_a_broken_split():
    exp = validate_experiment(experiment())
    counts = {
        "variants": [
            {
                "variant": "control",
                "region": "GB",
                "impressions": 10_000,
                "clicked": 500,
                "carted": 0,
                "converted": 100,
            },
            {
                "variant": "treatment",
                "region": "GB",
                "impressions": 10_050,
                "clicked": 650,
                "carted": 0,
                "converted": 160,
            },
        ],
        "revenue": [
            {
                "variant": "control",
                "region": "GB",
                "currency": "GBP",
                "purchases": 100,
                "revenue": 1000.0,
                "revenue_sq": 20000.0,
            },
            {
                "variant": "treatment",
                "region": "GB",
                "currency": "GBP",
                "purchases": 160,
                "revenue": 1700.0,
                "revenue_sq": 30000.0,
            },
        ],
    }
    report = build_report(exp, counts)
    assert report["winner"] == "treatment" and report["p_value"] < 0.01 and report["uplift"] > 0.5
    counts["variants"][1]["impressions"] = 12_000  # far from 50/50: the split is broken, no winner is named
    report = build_report(exp, counts)
    assert report["sample_ratio"]["mismatch"] and report["winner"] is None
    assert report["revenue_by_currency"]["GBP"]["winner"] is None  # nor on revenue


def _two_currencies() -> dict:
    """GB pays in GBP, DE in EUR: treatment earns more in EUR, the same in GBP."""
    rows = []
    for variant, de_purchases, de_revenue, de_sq in (
        ("control", 300, 3000.0, 40_000.0),
        ("treatment", 300, 6000.0, 160_000.0),
    ):
        rows += [
            {"variant": variant, "region": "GB", "impressions": 4000, "clicked": 400, "carted": 0, "converted": 200},
            {
                "variant": variant,
                "region": "DE",
                "impressions": 6000,
                "clicked": 600,
                "carted": 0,
                "converted": de_purchases,
            },
        ]
    revenue = [
        {"variant": v, "region": "GB", "currency": "GBP", "purchases": 200, "revenue": 2000.0, "revenue_sq": 25_000.0}
        for v in ("control", "treatment")
    ]
    revenue += [
        {
            "variant": "control",
            "region": "DE",
            "currency": "EUR",
            "purchases": 300,
            "revenue": 3000.0,
            "revenue_sq": 40_000.0,
        },
        {
            "variant": "treatment",
            "region": "DE",
            "currency": "EUR",
            "purchases": 300,
            "revenue": 6000.0,
            "revenue_sq": 160_000.0,
        },
        {"variant": "treatment", "region": "GB", "currency": None, "purchases": 1, "revenue": 5.0, "revenue_sq": 25.0},
    ]
    return {"variants": rows, "revenue": revenue, "unattributed": {"click": 3, "purchase": 1}}


def test_revenue_is_reported_and_tested_per_currency_never_summed():
    exp = validate_experiment(experiment(regions=["GB", "DE"]))
    report = build_report(exp, _two_currencies())
    assert report["currencies"] == ["EUR", "GBP", NO_CURRENCY]
    control, treatment = report["variants"]["control"], report["variants"]["treatment"]
    assert treatment["revenue"] == {"EUR": 6000.0, "GBP": 2000.0, NO_CURRENCY: 5.0}  # no one figure mixing them
    assert control["revenue"][NO_CURRENCY] == 0.0
    # Per currency over the impressions of the regions that pay in it: EUR over DE's 6000, GBP over GB's 4000.
    eur, gbp = treatment["revenue_per_impression"]["EUR"], treatment["revenue_per_impression"]["GBP"]
    assert eur["impressions"] == 6000 and eur["mean"] == pytest.approx(1.0) and eur["ci_low"] < 1.0 < eur["ci_high"]
    assert gbp["impressions"] == 4000 and gbp["mean"] == pytest.approx(0.5) and gbp["purchases"] == 200
    tests = treatment["vs_control"]["revenue_per_impression"]
    assert tests["EUR"]["p_value"] < 0.001 and tests["EUR"]["uplift"] == pytest.approx(1.0)
    assert tests["GBP"]["p_value"] == pytest.approx(1.0) and tests["GBP"]["uplift"] == pytest.approx(0.0)
    assert report["revenue_by_currency"]["EUR"] == {
        "regions": ["DE"],
        "leader": "treatment",
        "winner": "treatment",
        "significant": True,
        "p_value": tests["EUR"]["p_value"],
        "uplift": pytest.approx(1.0),
    }
    assert report["revenue_by_currency"]["GBP"]["winner"] is None
    assert report["unattributed"] == 4 and report["unattributed_by_kind"] == {"click": 3, "purchase": 1}


def test_welch_matches_a_hand_computation():
    # Control: 100 impressions, mean 1, variance 4; treatment: 100, mean 2, variance 9 -> z = 1 / sqrt(0.13).
    n = 100

    def sq(mean: float, var: float) -> float:  # the sum of squares of n values with this mean and variance
        return (var * (n - 1) / n + mean * mean) * n

    z = two_mean_z(100.0, sq(1, 4), n, 200.0, sq(2, 9), n)
    assert z["z"] == pytest.approx(1 / 0.13**0.5) and z["p_value"] == pytest.approx(0.00555, abs=1e-4)
    assert two_mean_z(0.0, 0.0, 1, 1.0, 1.0, 1)["p_value"] is None  # too few impressions to test


def test_the_plot_title_says_no_significant_winner_and_the_legend_sits_off_the_bars(tmp_path):
    pytest.importorskip("matplotlib")
    exp = validate_experiment(experiment(regions=["GB", "DE"]))
    counts = _two_currencies()
    for row in counts["variants"]:
        row["converted"] = 200  # the same conversion everywhere: no winner on conversion
    report = build_report(exp, counts)
    assert report["winner"] is None
    title = plot_title(report)
    assert "no significant winner" in title and "None" not in title
    counts["variants"][1]["impressions"] = 9000  # a broken split says so
    assert "sample ratio mismatch" in plot_title(build_report(exp, counts))
    won = build_report(
        exp,
        {
            **_two_currencies(),
            "variants": [
                {**r, "converted": 100 if r["variant"] == "control" else 400} for r in _two_currencies()["variants"]
            ],
        },
    )
    assert plot_title(won).startswith("experiment exp-1: winner treatment on conversion (p=")

    fig = report_figure(report)
    try:
        assert fig.texts == [] or all("None" not in t.get_text() for t in fig.texts)
        assert fig._suptitle.get_text() == title
        titles = [ax.get_title() for ax in fig.axes]
        assert titles[:2] == ["CTR (95% CI)", "conversion (95% CI)"]
        assert titles[2:] == [f"revenue / impression, {c} (95% CI)" for c in report["currencies"]]
        # The legend is the figure's, outside every panel: it covers no bar.
        assert len(fig.legends) == 1 and all(ax.get_legend() is None for ax in fig.axes)
        renderer = fig.canvas.get_renderer()
        legend = fig.legends[0].get_window_extent(renderer)
        assert [t.get_text() for t in fig.legends[0].get_texts()] == ["control", "treatment"]
        for ax in fig.axes:
            assert not legend.overlaps(ax.get_tightbbox(renderer)), ax.get_title()  # nor a tick label
    finally:
        import matplotlib.pyplot as plt

        plt.close(fig)
    path = plot_report(report, str(tmp_path / "report.png"))
    assert (tmp_path / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.endswith("report.png")
