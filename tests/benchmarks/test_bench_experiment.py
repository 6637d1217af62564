"""The experiment simulation end to end at its smallest size (quick mode on the synthetic shop, about 15 s): real
origin and two regional edges, shoppers with history and test-period purchases, events through the spools to the
origin's report. Checks the outputs' shape and that no event was lost or counted twice; never the figures or the
timing. (The real data's reading, split and training are tested in tests/models/test_real_data.py.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.bench_support import is_png, needs_modules, run_benchmark

pytestmark = needs_modules("matplotlib")


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("experiment")
    run_benchmark("experiment", "--out", str(out), "--quick", "--data", "synthetic", timeout=300)
    return out


def test_quick_run_writes_report_json_md_and_a_png(report_dir: Path) -> None:
    for name in ("report.json", "report.md", "experiment.png"):
        assert (report_dir / name).is_file(), name
    assert is_png(report_dir / "experiment.png")
    assert "Winner:" in (report_dir / "report.md").read_text()
    assert not (report_dir / "work").exists()  # logs and databases are removed unless --keep-work


def test_report_has_the_keys_the_issue_asks_for(report_dir: Path) -> None:
    report = json.loads((report_dir / "report.json").read_text())
    assert {
        "variants",
        "winner",
        "uplift",
        "p_value",
        "events_sent",
        "events_ingested",
        "duplicates",
        "lost",
    } <= report.keys()
    assert set(report["variants"]) == {"popularity", "model"}
    for name, v in report["variants"].items():
        assert {"impressions", "ctr", "conversion", "ci95"} <= v.keys(), name
        assert v["impressions"] > 0 and len(v["ci95"]) == 2
        assert v["ci95"][0] <= v["conversion"] <= v["ci95"][1]
    assert report["winner"] in report["variants"]
    assert report["settings"]["regions"][0] == "GB" and len(report["settings"]["regions"]) == 2


def test_revenue_is_per_currency_never_one_sum(report_dir: Path) -> None:
    """GB pays in GBP, the other region in EUR: the report keeps them apart, per variant and in its tests."""
    report = json.loads((report_dir / "report.json").read_text())
    assert set(report["currencies"]) <= {"GBP", "EUR"} and "GBP" in report["currencies"]
    assert report["revenue_by_currency"]["GBP"]["regions"] == ["GB"]
    if "EUR" in report["currencies"]:
        assert report["revenue_by_currency"]["EUR"]["regions"] == [report["settings"]["regions"][1]]
    for name, v in report["variants"].items():
        assert set(v["revenue"]) == set(v["revenue_per_impression"]) == set(report["currencies"]), name
        for cur, (low, high) in v["revenue_per_impression_ci95"].items():
            if low is not None:  # None: too few impressions in that currency's regions for an interval
                assert low <= v["revenue_per_impression"][cur] <= high, (name, cur)
    origin = report["origin_report"]
    assert origin["variants"]["model"]["vs_control"]["revenue_per_impression"].keys() == set(report["currencies"])
    assert report["unattributed"] == 0  # every simulated click and purchase follows an answer
    assert all(f"revenue / impression, {cur}" in (report_dir / "report.md").read_text() for cur in report["currencies"])
    assert "model_ref" not in json.dumps(origin["definition"]) or all(
        set(v["model_ref"]) == {"version", "sha256"} for v in origin["definition"]["variants"] if v["model_ref"]
    )


def test_every_event_sent_reached_the_origin_exactly_once(report_dir: Path) -> None:
    report = json.loads((report_dir / "report.json").read_text())
    assert report["duplicates"] == 0 and report["lost"] == 0
    assert report["events_sent"] == report["events_ingested"] > 0
    impressions = sum(v["impressions"] for v in report["variants"].values())
    assert impressions == report["integrity"]["by_kind"]["impression"]["sent"]
