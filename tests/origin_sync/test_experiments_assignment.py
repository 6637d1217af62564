"""Experiment definitions and the shopper-to-variant split: validated like offers, deterministic, and within
tolerance of the traffic weights."""

from __future__ import annotations

import pytest

from origin_sync.analysis import build_report, chi2_sf, proportion, sample_ratio_check, two_proportion_z
from origin_sync.experiments import BUCKETS, InvalidExperiment, assign, bucket_bounds, bucket_of, validate_experiment


def experiment(**overrides):
    body = {"id": "exp-1", "variants": [{"name": "control", "weight": 50},
                                        {"name": "treatment", "weight": 50, "model": "m-2", "max_per_group": 2,
                                         "boosts": {"GB-1": 1.5}}],
            "start": "2026-11-24T00:00:00Z", "end": None, "regions": ["GB"]}
    body.update(overrides)
    return body


def test_a_valid_experiment_is_returned_in_canonical_form():
    checked = validate_experiment(experiment(), "exp-1")
    assert checked["salt"] == "exp-1" and checked["regions"] == ["GB"] and checked["end"] is None
    assert checked["variants"][1] == {"name": "treatment", "weight": 50.0, "model": "m-2", "max_per_group": 2,
                                      "boosts": {"GB-1": 1.5}}
    assert isinstance(checked["start"], float)


@pytest.mark.parametrize("bad, field", [
    ({"variants": [{"name": "only"}]}, "variants"),
    ({"variants": [{"name": "a"}, {"name": "a"}]}, "unique"),
    ({"variants": [{"name": "a", "weight": 0}, {"name": "b"}]}, "weight"),
    ({"variants": [{"name": "a"}, {"name": "b", "boosts": {"x": 1e9}}]}, "boosts"),
    ({"variants": [{"name": "a"}, {"name": "b", "colour": 1}]}, "unknown"),
    ({"start": "2026-12-01T00:00:00Z", "end": "2026-11-01T00:00:00Z"}, "end"),
    ({"regions": ["gbr"]}, "regions"),
    ({"id": "other"}, "path"),
    ({"salt": ""}, "salt"),
])
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
    assert abs(agree - (0.25 ** 2 + 0.75 ** 2)) < 0.02


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
    counts = [{"variant": "control", "impressions": 10_000, "clicked": 500, "carted": 0, "converted": 100,
               "revenue": 1000.0, "revenue_sq": 20000.0},
              {"variant": "treatment", "impressions": 10_050, "clicked": 650, "carted": 0, "converted": 160,
               "revenue": 1700.0, "revenue_sq": 30000.0}]
    report = build_report(exp, counts)
    assert report["winner"] == "treatment" and report["p_value"] < 0.01 and report["uplift"] > 0.5
    counts[1]["impressions"] = 12_000  # far from 50/50: the split is broken, no winner is named
    report = build_report(exp, counts)
    assert report["sample_ratio"]["mismatch"] and report["winner"] is None
