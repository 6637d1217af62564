"""The events-ack benchmark in a few seconds: real origin and one edge per mode; checks the outputs' shape and that
every answer was a 202, never the figures."""

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


def test_a_short_run_writes_report_json_md_and_a_png_with_both_modes(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.events_ack",
            "--out",
            str(tmp_path),
            "--duration",
            "0.5",
            "--warmup",
            "0.2",
            "--concurrency",
            "1,4",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, f"stdout:\n{result.stdout[-4000:]}\nstderr:\n{result.stderr[-4000:]}"
    report = json.loads((tmp_path / "report.json").read_text())
    assert set(report["modes"]) == {"write", "fsync"}
    for mode in report["modes"].values():
        for step in mode.values():
            assert step["requests"] > 0 and set(step["statuses"]) == {"202"}
            assert step["p50_ms"] <= step["p99_ms"] <= step["max_ms"]
    assert "| fsync | 4 |" in (tmp_path / "report.md").read_text()
    assert (tmp_path / "events_ack.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
