"""The events-ack benchmark in a few seconds: real origin and one edge per mode; checks the outputs' shape and that
every answer was a 202, never the figures."""

from __future__ import annotations

import json
from pathlib import Path

from tests.bench_support import is_png, needs_modules, run_benchmark

pytestmark = needs_modules("matplotlib")


def test_a_short_run_writes_report_json_md_and_a_png_with_both_modes(tmp_path: Path) -> None:
    argv = ["--out", str(tmp_path), "--duration", "0.5", "--warmup", "0.2", "--concurrency", "1,4"]
    run_benchmark("events_ack", *argv, timeout=180)
    report = json.loads((tmp_path / "report.json").read_text())
    assert set(report["modes"]) == {"write", "fsync"}
    for mode in report["modes"].values():
        for step in mode.values():
            assert step["requests"] > 0 and set(step["statuses"]) == {"202"}
            assert step["p50_ms"] <= step["p99_ms"] <= step["max_ms"]
    assert "| fsync | 4 |" in (tmp_path / "report.md").read_text()
    assert is_png(tmp_path / "events_ack.png")
