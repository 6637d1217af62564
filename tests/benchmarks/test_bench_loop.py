"""The learning-loop simulation at its smallest size (--quick on the real Online Retail data, about 1.5 min): the
real pipeline against a real origin and two regional edges, three monthly rounds of real shoppers. Checks that every
round ends in a decision, that the bad candidate is stopped within its first stage's share with no shopper getting an
error, and that the A/A rates are rates; never the timing. Synthetic shoppers buy too much of the small catalog for
any ranker to tell apart, so without the shared data the test is skipped."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.bench_support import is_png, needs_modules, run_benchmark
from tests.conftest import SHARED_DATA

pytestmark = [
    needs_modules("matplotlib"),
    pytest.mark.skipif(not SHARED_DATA.is_file(), reason=f"the shared Online Retail data is not at {SHARED_DATA}"),
]


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("loop")
    run_benchmark("loop", "--out", str(out), "--quick", "--data", str(SHARED_DATA), timeout=400)
    return out


def test_quick_run_writes_report_json_md_and_the_pngs(report_dir: Path) -> None:
    for name in ("report.json", "report.md", "loop_metric.png", "loop_aa.png"):
        assert (report_dir / name).is_file(), name
    for name in ("loop_metric.png", "loop_aa.png"):
        assert is_png(report_dir / name), name
    assert "Bad candidate" in (report_dir / "report.md").read_text()
    assert not (report_dir / "work").exists()  # logs and databases are removed unless --keep-work


def test_every_round_ends_in_a_decision_with_its_evidence(report_dir: Path) -> None:
    report = json.loads((report_dir / "report.json").read_text())
    rounds = report["rounds"]
    assert [r["round"] for r in rounds] == [1, 2, 3]
    for r in rounds:
        assert r["decision"] in ("promoted", "stopped", "kept"), r
        assert r["candidate"].startswith("m-") and r["candidate"] != r["served"]
        assert r["impressions"]["candidate"] > 0 and r["impressions"]["served"] > 0
        assert ("watch" in {step for step, _ in r["decisions"]}) or r["outcome"] == "stopped_by_hand"
        if r["uplift"] is not None:
            assert r["uplift"] == pytest.approx(r["conversion"]["candidate"] / r["conversion"]["served"] - 1)
    points = report["timeline"]
    assert {p["round"] for p in points} == {1, 2, 3}
    for p in points:
        assert all(0.0 <= v <= 1.0 for v in p["conversion"].values() if v is not None)
    # a promotion changes what the next round's candidate is compared with
    for before, after in zip(rounds, rounds[1:]):
        assert after["served"] == (before["candidate"] if before["decision"] == "promoted" else before["served"])


def test_the_bad_candidate_is_stopped_within_its_stage_share_and_no_shopper_gets_an_error(report_dir: Path) -> None:
    report = json.loads((report_dir / "report.json").read_text())
    bad = report["bad_candidate"]
    assert bad["decision"] == "stopped" and bad["outcome"] in ("loss", "guardrail")
    assert 0 < bad["max_traffic_share"] <= bad["stage_share"]
    assert report["rounds"][bad["round"] - 1]["stages_reached"] == 1
    assert bad["conversion"]["candidate"] < bad["conversion"]["served"]
    assert report["errors"] == 0 and report["error_samples"] == []
    assert report["events"]["sent"] == report["events"]["at_origin"] > 0


def test_aa_rates_are_rates_from_the_runs_it_says(report_dir: Path) -> None:
    aa = json.loads((report_dir / "report.json").read_text())["aa"]
    assert aa["runs"] == 100 and aa["alpha"] == 0.05
    for test in ("sequential", "fixed_peeking"):
        rate = aa[f"false_winner_rate_{test}"]
        assert 0.0 <= rate <= 1.0 and rate * aa["runs"] == pytest.approx(round(rate * aa["runs"]))
        low, high = aa[f"false_winner_rate_{test}_ci95"]
        assert low <= rate <= high
        assert aa["false_winner_rate_by_look"][test][-1] == rate  # the curve ends at the rate
    assert "in process" in aa["method"]
