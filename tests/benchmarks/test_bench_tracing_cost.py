"""The in-process tracing cost benchmark at its smallest: every variant measured (against a baseline checkout too),
the report's shape, never its figures."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("matplotlib") is None,
    reason="the bench extra is not installed (pip install -e '.[bench]')",
)

REPO = Path(__file__).resolve().parents[2]


def test_each_variant_is_measured_and_reported_with_its_ratio_to_off(tmp_path: Path, bundle_dir: Path) -> None:
    argv = ["--out", str(tmp_path), "--bundle", str(bundle_dir), "--requests", "200", "--rounds", "1"]
    # This checkout as its own baseline: the baseline runs with tracing off through the same worker.
    argv += ["--baseline", str(REPO)]
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.tracing_cost", *argv], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "report.json").read_text())
    assert set(report["median_us_per_request"]) == {"off", "sample", "all", "baseline_off"}
    assert all(v > 0 for v in report["median_us_per_request"].values())
    assert set(report["ratios"]) == {"sample_vs_off", "all_vs_off", "baseline_off_vs_off"}
    assert report["otlp_exports_received"] >= 1  # the traced variants really exported
    assert "| tracing off |" in (tmp_path / "report.md").read_text()
    assert (tmp_path / "tracing_cost.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
