"""The workers benchmark starts a real edge per worker count, drives it with wrk and reports each count's figures."""

from __future__ import annotations

import json

from benchmarks import scaling
from benchmarks.loadgen import wrk_missing
from tests.conftest import needs


@needs(wrk_missing())
def test_the_workers_benchmark_measures_each_count_with_a_real_edge_and_plots_the_curve(tmp_path):
    out = tmp_path / "scaling"
    argv = ["--out", str(out), "--workers", "2,1", "--duration", "3", "--warmup", "1", "--data", "synthetic"]
    assert scaling.main(argv) == 0
    report = json.loads((out / "scaling.json").read_text())
    rows = {row["workers"]: row for row in report["rows"]}
    assert sorted(rows) == [1, 2]
    for row in rows.values():
        assert row["errors"] == 0 and row["rps"] > 50, row
        assert 0 < row["cpu_us_per_request"] < 100_000, row
        assert row["mean_batch"] >= 1.0, row  # the edge's own count of requests a model run, from /metrics
    assert rows[1]["efficiency"] == 1.0
    assert rows[1]["placement"]["pinned"] and rows[1]["placement"]["server_cores"] == [0]
    # Two workers on this 2-core machine leave no core for wrk: the row says its figure is shared with the load.
    assert "share every core" in rows[2]["shared_cores"]
    assert (out / "scaling.png").stat().st_size > 5000
    assert "| 2 |" in (out / "scaling.md").read_text()


def test_bad_worker_counts_are_a_clear_cli_error(tmp_path, capsys):
    for bad in ("0", "two", ""):
        try:
            scaling.main(["--out", str(tmp_path), "--workers", bad])
        except SystemExit as exc:
            assert exc.code == 2
        else:
            raise AssertionError(f"--workers {bad!r} was accepted")
        assert "--workers" in capsys.readouterr().err
