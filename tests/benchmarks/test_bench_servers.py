"""The server comparison runs each server for real and reports what it measured."""

from __future__ import annotations

import json

from benchmarks import servers
from benchmarks.loadgen import wrk_missing
from tests.conftest import needs


@needs(wrk_missing())
def test_the_server_comparison_serves_the_same_answer_on_each_server_and_reports_cpu_per_request(tmp_path):
    out = tmp_path / "servers"
    assert (
        servers.main(
            ["--out", str(out), "--duration", "1", "--repeat", "1", "--targets", "uvicorn-starlette,granian-rsgi-raw"]
        )
        == 0
    )
    report = json.loads((out / "report.json").read_text())
    for name in ("uvicorn-starlette", "granian-rsgi-raw"):
        target = report["targets"][name]
        assert target["errors"] == 0 and target["rps"] > 100, target
        assert 0 < target["cpu_us_per_request"] < 10_000, target
    assert report["targets"]["uvicorn-starlette"]["rps_vs_reference"] == 1.0
    assert (out / "servers.png").stat().st_size > 5000
    assert "granian-rsgi-raw" in (out / "report.md").read_text()
