"""The latency benchmark end to end in smoke mode: real origin, edge, ceiling (and Varnish, wrk when installed),
locust for a second per step; checks the outputs' shape, never the figures (this machine is shared)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.bench_support import is_png, needs_modules, run_benchmark

pytestmark = needs_modules("locust", "matplotlib")

T_KEYS = {"rps", "p50_ms", "p95_ms", "p99_ms", "p999_ms", "max_ms", "errors", "cpu_percent"}


@pytest.fixture(scope="module")
def smoke_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bench")
    # 1.4 s a run: locust runs whole seconds (2 s, its users need the time to start), wrk rounds to 1 s.
    run_benchmark(
        "latency",
        *("--out", str(out), "--quick", "--data", "synthetic", "--duration", "1", "--warmup", "0.4", "--users", "4"),
        timeout=150,
    )
    return out


def test_smoke_run_writes_report_json_md_and_both_plots(smoke_report: Path) -> None:
    for name in ("report.json", "report.md", "latency_cdf.png", "throughput_p99.png"):
        assert (smoke_report / name).is_file(), name
    for png in ("latency_cdf.png", "throughput_p99.png"):
        assert is_png(smoke_report / png)


def test_report_json_has_the_shape_the_issue_asks_for(smoke_report: Path) -> None:
    report = json.loads((smoke_report / "report.json").read_text())
    assert {"machine", "targets", "ratios", "at_70pct_peak"} <= report.keys()
    assert report["machine"]["placement"]["pinned"] in (True, False)
    assert {"edgerec", "ceiling", "peer", "edgerec_cdn"} <= report["targets"].keys()
    for name, target in report["targets"].items():
        assert T_KEYS <= target.keys(), name
    assert report["targets"]["peer"]["name"]
    assert report["targets"]["peer"]["skipped"]  # --quick makes no peer venv
    assert {"edgerec_vs_ceiling_rps", "edgerec_vs_server_floor_rps", "edgerec_vs_peer_rps"} <= report["ratios"].keys()
    assert {"rps", "p99_ms"} <= report["at_70pct_peak"]["edgerec"].keys()
    if os.environ.get("EDGEREC_INFRA_STRICT") == "1":  # CI installs wrk (make test): its runs must be there
        assert report["targets"]["edgerec"].get("wrk", {}).get("rps"), report["targets"]["edgerec"].get("wrk")
    if report["targets"]["edgerec"].get("wrk", {}).get("rps"):  # wrk installed: the fixed-rate step ran too
        at70 = report["at_70pct_peak_wrk"]["edgerec"]
        assert at70["rps"] == pytest.approx(at70["offered_rps"], rel=0.1), at70  # the schedule held the rate
        assert at70["errors"] == 0 and at70["p99_ms"] > 0


def test_edgerec_and_ceiling_were_measured_without_errors(smoke_report: Path) -> None:
    report = json.loads((smoke_report / "report.json").read_text())
    for name in ("edgerec", "edgerec_granian", "ceiling", "ceiling_raw"):
        target = report["targets"][name]
        assert "skipped" not in target, f"{name}: {target.get('skipped')}"
        assert target["rps"] > 0 and target["errors"] == 0, target
    cdn = report["targets"]["edgerec_cdn"]
    # Varnish may be missing on this machine: then the report says why instead of failing.
    assert cdn.get("skipped") or (cdn["rps"] > 0 and cdn["errors"] == 0), cdn


def test_the_server_a_b_serves_the_same_edge_on_granian_in_the_same_run(smoke_report: Path) -> None:
    report = json.loads((smoke_report / "report.json").read_text())
    assert "granian" in report["targets"]["edgerec_granian"]["note"]
    assert isinstance(report["ratios"]["granian_vs_uvicorn_rps"], float)


def test_report_md_shows_the_table_and_the_readme_section(smoke_report: Path) -> None:
    text = (smoke_report / "report.md").read_text()
    assert "| target | req/s (locust) |" in text
    assert "## For README.md" in text and "python -m benchmarks.latency" in text


def test_events_on_off_is_measured_in_the_same_run(smoke_report: Path) -> None:
    report = json.loads((smoke_report / "report.json").read_text())
    off = report["targets"]["edgerec_no_events"]
    assert "skipped" not in off, off.get("skipped")
    assert off["rps"] > 0 and off["errors"] == 0, off
    assert isinstance(report["ratios"]["events_on_vs_off_rps"], float)
    assert report["events_on_off_rounds"][0]["on_locust"] and report["events_on_off_rounds"][0]["off_locust"]
    assert "- events on / off" in (smoke_report / "report.md").read_text()
    assert is_png(smoke_report / "events_on_off.png")


def test_tracing_at_a_sample_is_measured_in_the_same_run(smoke_report: Path) -> None:
    report = json.loads((smoke_report / "report.json").read_text())
    traced = report["targets"]["edgerec_traced"]
    assert "skipped" not in traced, traced.get("skipped")
    assert traced["rps"] > 0 and traced["errors"] == 0, traced
    assert "OTLP exports" in traced["note"]  # the sink the traced edge exported to
    assert isinstance(report["ratios"]["traced_vs_untraced_rps"], float)
    assert report["settings"]["trace_sample"] == 0.01
    assert "- tracing a 0.01 sample / tracing off" in (smoke_report / "report.md").read_text()


def _measured(rps: float, wrk_rps: float, p99_ms: float, **extra: object) -> dict:
    """One target's result in one round as measure_target returns it: a peak run, a wrk run, one 70% step."""
    peak = {"rps": rps, "p50_ms": p99_ms / 3, "p95_ms": p99_ms / 2, "p99_ms": p99_ms, "p999_ms": p99_ms * 2}
    peak.update(max_ms=p99_ms * 3, errors=0, cpu_percent=90.0, loadgen_cpu_percent=50.0, users=32)
    wrk = {**peak, "rps": wrk_rps, "connections": 32}
    step = {**peak, "rps": 0.7 * rps, "offered_rps": 0.7 * rps, "fraction": 0.7}
    return {"peak": peak, "wrk": wrk, "steps": [step], **extra}


def test_the_report_names_the_peer_with_the_higher_req_s_and_lists_each_peer() -> None:
    from benchmarks.report import ORDER, build_report

    skipped = {"skipped": "not in --targets"}
    rounds = [
        {
            **{name: skipped for name in ORDER},
            "edgerec": _measured(9000, 11000, 6.0),
            "ceiling": _measured(10000, 30000, 5.0),
            "peer_mlserver": _measured(300, 320, 40.0, name="MLServer 1.7.1", version="MLServer 1.7.1, uvloop 0.21.0"),
            "peer_pytriton": _measured(450, 500, 30.0, name="PyTriton 0.7.0", version="PyTriton 0.7.0"),
        }
    ]
    report = build_report({"versions": {}}, {}, rounds, "python -m benchmarks.latency")
    assert {"targets", "ratios", "at_70pct_peak"} <= report.keys()
    peer = report["targets"]["peer"]
    assert peer["name"] == "PyTriton 0.7.0" and peer["target"] == "peer_pytriton" and peer["wrk"]["rps"] == 500
    assert report["ratios"]["edgerec_vs_peer_rps"] == round(11000 / 500, 3)  # wrk's, as edgerec and ceiling have it
    assert report["at_70pct_peak"]["peer"]["rps"] == report["at_70pct_peak"]["peer_pytriton"]["rps"]
    peers = report["peers"]
    assert peers["pytriton"] == {
        "target": "peer_pytriton",
        "name": "PyTriton 0.7.0",
        "version": "PyTriton 0.7.0",
        "best": True,
        "rps": 450,
        "wrk_rps": 500,
        "p99_ms": 30.0,
        "cpu_ms_per_request": round(90.0 * 10.0 / 450, 4),
    }
    assert peers["mlserver"]["best"] is False and peers["mlserver"]["rps"] == 300
    assert "peer" not in report["rounds"][0]  # the best peer stands in the ratios, not twice in the rounds

    # One peer skipped: the other is the best; none measured: `peer` says why for each.
    rounds[0]["peer_pytriton"] = {"skipped": "the peer did not start: no libpython", "name": "PyTriton 0.7.0"}
    report = build_report({"versions": {}}, {}, rounds, "python -m benchmarks.latency")
    assert report["targets"]["peer"]["name"] == "MLServer 1.7.1"
    assert report["peers"]["pytriton"]["skipped"] == "the peer did not start: no libpython"
    assert report["ratios"]["edgerec_vs_peer_rps"] == round(11000 / 320, 3)
    rounds[0]["peer_mlserver"] = {"skipped": "--quick (no peer venv made in smoke mode)", "name": "MLServer 1.7.1"}
    report = build_report({"versions": {}}, {}, rounds, "python -m benchmarks.latency")
    assert report["targets"]["peer"]["skipped"].count("peer_") == 2 and report["targets"]["peer"]["rps"] is None
    assert report["ratios"]["edgerec_vs_peer_rps"] is None and report["peer_wins"] == []
