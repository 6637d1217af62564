"""The in-process tracing cost benchmark at its smallest: every variant measured (against a baseline checkout too),
the report's shape, never its figures."""

from __future__ import annotations

import json
from pathlib import Path

from tests.bench_support import is_png, needs_modules, run_benchmark
from tests.conftest import REPO

pytestmark = needs_modules("matplotlib")


def test_each_variant_is_measured_and_reported_with_its_ratio_to_off(tmp_path: Path, bundle_dir: Path) -> None:
    argv = ["--out", str(tmp_path), "--bundle", str(bundle_dir), "--requests", "200", "--rounds", "1"]
    # This checkout as its own baseline: the baseline runs with tracing off through the same worker.
    argv += ["--baseline", str(REPO)]
    run_benchmark("tracing_cost", *argv, timeout=300)
    report = json.loads((tmp_path / "report.json").read_text())
    assert set(report["median_us_per_request"]) == {"off", "sample", "all", "baseline_off"}
    assert all(v > 0 for v in report["median_us_per_request"].values())
    assert set(report["ratios"]) == {"sample_vs_off", "all_vs_off", "baseline_off_vs_off"}
    assert report["otlp_exports_received"] >= 1  # the traced variants really exported
    assert "| tracing off |" in (tmp_path / "report.md").read_text()
    assert is_png(tmp_path / "tracing_cost.png")
