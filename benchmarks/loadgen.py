"""Load generators of the benchmark: locust (the realistic traffic) and wrk (the low-overhead cross-check)."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .histogram import Measurement
from .processes import CpuSampler, cores
from .traffic import Contract, RequestMix

HERE = Path(__file__).resolve().parent
LOCUSTFILE = HERE / "locustfile.py"
WRK_SCRIPT = HERE / "wrk_requests.lua"
WRK_INSTALL_HINT = "apt-get install -y wrk"


@dataclass(frozen=True)
class LoadSettings:
    users: int
    locust_processes: int
    warmup_s: float
    load_cores: tuple[int, ...] | None
    server_cores: tuple[int, ...] | None
    traffic_path: Path
    contract: Contract
    cdn_secret: str


def _locust_binary() -> list[str]:
    exe = Path(sys.executable).with_name("locust")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "locust"]


def run_locust(
    name: str,
    target: str,
    hosts: list[str],
    settings: LoadSettings,
    duration_s: float,
    rate: float,
    out_dir: Path,
    sampler: CpuSampler,
    server_group: str,
) -> dict[str, Any]:
    """One locust run at a fixed user count: closed loop when rate is 0, else paced to `rate` req/s in total.

    Returns the exact latency summary of the measured window (after the warm-up), the server's CPU
    over that window and the load generator's own CPU.
    """
    run_dir = out_dir / name
    hist_dir = run_dir / "hist"
    if run_dir.exists():
        shutil.rmtree(run_dir)
    hist_dir.mkdir(parents=True)
    argv = [
        *_locust_binary(),
        "-f",
        str(LOCUSTFILE),
        "--headless",
        "--host",
        hosts[0],
        "-u",
        str(settings.users),
        "-r",
        str(settings.users),
        "-t",
        f"{math.ceil(settings.warmup_s + duration_s)}s",
        "--only-summary",
        "--loglevel",
        "WARNING",
        "--exit-code-on-error",
        "0",
        "--json-file",
        str(run_dir / "locust"),
    ]
    if settings.locust_processes > 1:
        argv += ["--processes", str(settings.locust_processes)]
    env = {
        **os.environ,
        "EDGEREC_BENCH_TRAFFIC": str(settings.traffic_path),
        "EDGEREC_BENCH_TARGET": target,
        "EDGEREC_BENCH_HOSTS": ",".join(hosts),
        "EDGEREC_BENCH_RATE": str(rate),
        "EDGEREC_BENCH_USERS": str(settings.users),
        "EDGEREC_BENCH_CONTRACT": json.dumps(settings.contract.to_json()),
        "EDGEREC_CDN_SECRET": settings.cdn_secret,
        "EDGEREC_BENCH_HIST_DIR": str(hist_dir),
        "EDGEREC_BENCH_WARMUP_S": str(settings.warmup_s),
        "PYTHONPATH": str(HERE.parent),
    }
    started = time.time()
    with open(run_dir / "locust.log", "wb") as log, cores(settings.load_cores):
        proc = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=str(HERE.parent)
        )
    sampler.track(f"load:{name}", [proc.pid])
    try:
        proc.wait(timeout=settings.warmup_s + duration_s + 60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise RuntimeError(f"locust run {name} did not end; see {run_dir / 'locust.log'}")
    finally:
        sampler.untrack(f"load:{name}")
    parts = [json.loads(p.read_text()) for p in sorted(hist_dir.glob("hist-*.json"))]
    measured = Measurement.merge(parts)
    if measured is None:
        tail = (run_dir / "locust.log").read_text(errors="replace")[-1500:]
        raise RuntimeError(f"locust run {name} recorded no request (exit {proc.returncode}): {tail}")
    result = measured.summary()
    result["cpu_percent"] = sampler.percent(server_group, measured.window_start, measured.window_end)
    result["loadgen_cpu_percent"] = sampler.percent(f"load:{name}", measured.window_start, measured.window_end)
    result["offered_rps"] = rate or None
    result["users"] = settings.users
    result["seconds"] = round(measured.seconds, 2)
    result["by_kind"] = {kind: _kind_summary(h) for kind, h in measured.kinds.items()}
    result["wall_s"] = round(time.time() - started, 1)
    result["_histogram"] = measured.total  # for the CDF plot; not written to report.json
    return result


def _kind_summary(h) -> dict[str, Any]:
    return {
        "requests": h.count + h.errors,
        "errors": h.errors,
        "p50_ms": _r(h.quantile(0.5)),
        "p99_ms": _r(h.quantile(0.99)),
    }


def _r(v: float | None) -> float | None:
    return None if v is None else round(v, 3)


def wrk_missing() -> str | None:
    if not shutil.which("wrk"):
        return f"wrk not installed (install with: {WRK_INSTALL_HINT})"
    return None


def write_wrk_requests(
    path: Path, traffic: dict[str, Any], target: str, contract: Contract, secret: str, count: int = 4000
) -> Path:
    """The same request mix as locust's, as lines wrk_requests.lua replays."""
    mix = RequestMix(traffic, target, contract, secret, seed=12345)
    lines = []
    for req in mix.sample(count):
        body = req.body.decode() if req.body else ""
        fields = [req.method, req.path, body, *(f"{k}: {v}" for k, v in req.headers.items())]
        lines.append("\t".join(fields))
    path.write_text("\n".join(lines) + "\n")
    return path


_WRK_LINE = re.compile(r"^EDGEREC_WRK (\{.*\})\s*$", re.M)
_WRK_CDF = re.compile(r"^EDGEREC_WRK_CDF (\[.*\])\s*$", re.M)


def run_wrk(
    name: str,
    hosts: list[str],
    requests_file: Path,
    connections: int,
    duration_s: float,
    load_cores: tuple[int, ...] | None,
    out_dir: Path,
    sampler: CpuSampler,
    server_group: str,
    rate: float = 0.0,
    threads: int = 1,
) -> dict[str, Any]:
    """wrk against every server process at once (one wrk each, `threads` threads), summed: the server's capacity, or
    with rate > 0 the latency at that fixed arrival rate in total (wrk_requests.lua's schedule, split over the hosts
    and their threads: each thread keeps its own)."""
    wrk = shutil.which("wrk")
    assert wrk is not None
    per_host = max(1, connections // len(hosts))
    logs = []
    procs = []
    started = time.time()
    with cores(load_cores):
        for i, host in enumerate(hosts):
            log = out_dir / f"{name}-{i}.log"
            logs.append(log)
            with open(log, "wb") as fh:
                env = {**os.environ, "EDGEREC_WRK_RATE": f"{rate / len(hosts) / threads:.3f}"} if rate > 0 else None
                procs.append(
                    subprocess.Popen(
                        [
                            wrk,
                            f"-t{threads}",
                            f"-c{per_host}",
                            f"-d{max(1, int(round(duration_s)))}s",
                            "--timeout",
                            "5s",
                            "-s",
                            str(WRK_SCRIPT),
                            host,
                            "--",
                            str(requests_file),
                        ],
                        stdout=fh,
                        stderr=subprocess.STDOUT,
                        stdin=subprocess.DEVNULL,
                        env=env,
                    )
                )
    sampler.track(f"load:{name}", [p.pid for p in procs])
    for p in procs:
        p.wait(timeout=duration_s + 30)
    ended = time.time()
    load_cpu = sampler.percent(f"load:{name}", started, ended)
    sampler.untrack(f"load:{name}")
    results = []
    cdfs = []
    for log in logs:
        text = log.read_text(errors="replace")
        match = _WRK_LINE.search(text)
        if not match:
            raise RuntimeError(f"wrk printed no result: {text[-800:]}")
        results.append(json.loads(match.group(1)))
        cdf = _WRK_CDF.search(text)
        cdfs.append([[q, us / 1000.0] for q, us in json.loads(cdf.group(1))] if cdf else None)
    requests = sum(r["requests"] for r in results)
    seconds = max(r["duration_us"] for r in results) / 1e6
    errors = sum(
        r[k]
        for r in results
        for k in ("errors_connect", "errors_read", "errors_write", "errors_status", "errors_timeout")
    )
    worst = lambda key: round(max(r[key] for r in results) / 1000.0, 3)  # noqa: E731
    return {
        "rps": round(requests / seconds, 1),
        "p50_ms": worst("p50_us"),
        "p95_ms": worst("p95_us"),
        "p99_ms": worst("p99_us"),
        "p999_ms": worst("p999_us"),
        "max_ms": worst("max_us"),
        "errors": errors,
        "requests": requests,
        "connections": per_host * len(hosts),
        # Fixed-rate runs: requests that left over 1 ms after their slot because no connection was free.
        "late_sends": sum(r.get("late_sends", 0) for r in results),
        # The window of wrk's run, less a second at each end for connection set-up and tear-down.
        "cpu_percent": sampler.percent(server_group, started + 1.0, ended - 1.0),
        "loadgen_cpu_percent": load_cpu,
        # [quantile %, ms] of the one host's run (several hosts' distributions do not add up from quantiles).
        "cdf_ms": cdfs[0] if len(cdfs) == 1 else None,
    }
