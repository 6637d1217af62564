"""The latency benchmark's profile mode at its smallest size: 2,000 shoppers' profiles loaded through the origin's
import and the edges' start-up load, 5,000 offers, a second a run, replicas over Redis and over the origin. Checks
the report's fields and that the figures are sane (never the goals: this machine is shared)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.bench_support import is_png, needs_modules, run_benchmark

pytestmark = [
    needs_modules("matplotlib", "redis", reason="the bench and profiles-redis extras are not installed"),
    pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk not installed (apt-get install -y wrk)"),
]

PROFILES = 2000


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Path:
    out = tmp_path_factory.mktemp("profiles-bench")
    run_benchmark(
        "latency",
        *("--out", str(out), "--profiles", str(PROFILES), "--catalog-offers", "5000", "--data", "synthetic"),
        *("--duration", "1", "--warmup", "1", "--users", "8", "--propagation-events", "20", "--redis-url", redis_url),
        timeout=150,
    )
    return out


@pytest.fixture(scope="module")
def redis_url() -> str:
    import redis

    url = "redis://127.0.0.1:6379/0"
    try:
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
    except redis.RedisError as exc:
        pytest.skip(f"no Redis at {url}: {exc}")
    return url


@pytest.fixture(scope="module")
def report(report_dir: Path) -> dict:
    return json.loads((report_dir / "report.json").read_text())


def test_profile_mode_writes_its_report_and_plot(report_dir: Path) -> None:
    assert is_png(report_dir / "profiles.png")
    text = (report_dir / "report.md").read_text()
    assert "--profiles 2000" in text and "| replica path |" in text and "Goals:" in text


def test_the_profiles_came_through_the_origin_and_every_request_is_the_path_it_claims(report: dict) -> None:
    assert report["mode"] == "profiles"
    assert report["load"]["events"] > PROFILES and report["load"]["profiles_changed"] == PROFILES
    assert report["memory"]["profiles_held"] == PROFILES  # all loaded into the edge's memory tier
    assert report["settings"]["catalog_offers"] == 5000
    checked = report["settings"]["answers_checked"]
    assert checked["hit"] == {"hit": 50} and checked["request"] == {"request": 50}


def test_both_paths_were_measured_alternated_without_errors(report: dict) -> None:
    tp = report["throughput"]
    assert tp["errors"] == 0
    assert [r["order"] for r in tp["rounds"]] == [["hit", "request"]]
    assert tp["hit_rps"] > 0 and tp["request_rps"] > 0
    assert tp["rps_ratio"] == pytest.approx(tp["hit_rps"] / tp["request_rps"], rel=1e-3)
    for key in ("hit_p99_ms", "request_p99_ms", "hit_p99_at_70_ms", "request_p99_at_70_ms"):
        assert 0 < tp[key] < 5000, key


def test_memory_and_propagation_figures_are_sane(report: dict) -> None:
    memory = report["memory"]
    assert 30 < memory["rss_mib"] < 4000 and 30 < memory["rss_without_profiles_mib"] < 4000
    assert 0 < memory["accounted_per_profile_bytes"] < 28_000
    for path in ("redis", "origin"):
        p = report["propagation"][path]
        assert p["events"] == 20 and p["unseen"] == 0, p
        assert 0 < p["p50_ms"] <= p["p99_ms"] <= p["max_ms"] < 30_000, p
        assert len(p["replicas"]) == 2 and len(p["every_replica_ms"]) == 20
    assert set(report["goals"]) >= {"rss_at_most_300_mb", "propagation_redis_p99_at_most_250_ms"}
