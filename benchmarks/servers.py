"""Which server: the same bare endpoint on uvicorn (httptools, uvloop) and on granian (ASGI and RSGI), A/B.

    python -m benchmarks.servers --out DIR [--duration 5] [--repeat 3] [--connections 32]

Each target serves the same precomputed JSON answer to the same POST (benchmarks/server_apps.py): a Starlette
route, a raw ASGI callable, and granian's RSGI callable. One worker pinned to core 0, wrk (one thread) pinned to
core 1, targets alternated round by round (the machine is noisy: compare within a round). Reported per target:
requests/s, server CPU µs per request (user + system of the server's process tree over the run, over its
requests), p50/p99, each the median over rounds, and ratios to uvicorn's Starlette route, the ceiling's reference.
Writes report.json, report.md and servers.png.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from edgerec.cli.process import Service, free_port

from .processes import cores, tree_cpu_seconds

REQUEST = b'{"shopper_id":"s-1","region":"GB","k":10,"recent_items":["85123A","71053","84406B"]}'

_QUIET = ["--no-access-log", "--log-level", "warning"]


def _uvicorn(app: str) -> list[str]:
    return ["uvicorn", f"benchmarks.server_apps:{app}", "--http", "httptools", "--loop", "uvloop", *_QUIET]


def _granian(interface: str, app: str, runtime: list[str]) -> list[str]:
    return [
        "granian",
        "--interface",
        interface,
        f"benchmarks.server_apps:{app}",
        "--loop",
        "uvloop",
        "--workers",
        "1",
        *runtime,
        "--no-ws",
        "--log-level",
        "warning",
    ]


# One worker thread each; "st" is granian's single-threaded runtime mode.
_ONE_THREAD = ["--runtime-threads", "1"]
_SINGLE_THREADED = ["--runtime-mode", "st"]

TARGETS: dict[str, list[str]] = {
    "uvicorn-starlette": _uvicorn("starlette_app"),
    "uvicorn-asgi-raw": _uvicorn("asgi_app"),
    "granian-asgi-starlette": _granian("asgi", "starlette_app", _ONE_THREAD),
    "granian-asgi-raw": _granian("asgi", "asgi_app", _ONE_THREAD),
    "granian-rsgi-raw-st": _granian("rsgi", "rsgi_app", _SINGLE_THREADED),
    "granian-asgi-raw-st": _granian("asgi", "asgi_app", _SINGLE_THREADED),
    "granian-rsgi-raw": _granian("rsgi", "rsgi_app", _ONE_THREAD),
}
REFERENCE = "uvicorn-starlette"

WRK_LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '%s'
done = function(summary, latency, requests)
  io.write(string.format('RESULT {"requests": %%d, "duration_us": %%d, "errors": %%d, "p50_us": %%d, "p99_us": %%d}\\n',
    summary.requests, summary.duration,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.status
      + summary.errors.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


def _argv(name: str, port: int) -> list[str]:
    program, *rest = TARGETS[name]
    return [str(Path(sys.executable).with_name(program)), *rest, "--host", "127.0.0.1", "--port", str(port)]


def run_target(
    name: str,
    out: Path,
    duration_s: float,
    connections: int,
    server_core: int | None,
    load_core: int | None,
    body_file: Path,
) -> dict[str, Any]:
    port = free_port()
    service = Service(
        name,
        port,
        out / "logs" / f"{name}.log",
        argv=_argv(name, port),
        cwd=Path.cwd(),
        env={"EDGEREC_CEILING_BODY_FILE": str(body_file), "PYTHONPATH": os.getcwd()},
    )
    with cores((server_core,) if server_core is not None else None):
        service.start()
    try:
        service.wait_ready("/healthz", timeout_s=30)
        script = out / "post.lua"
        script.write_text(WRK_LUA % REQUEST.decode())
        wrk = shutil.which("wrk")
        assert wrk is not None

        def wrk_run(seconds: int) -> dict[str, Any]:
            with cores((load_core,) if load_core is not None else None):
                result = subprocess.run(
                    [
                        wrk,
                        "-t1",
                        f"-c{connections}",
                        f"-d{seconds}s",
                        "-s",
                        str(script),
                        service.url + "/v1/recommendations",
                    ],
                    capture_output=True,
                    text=True,
                    timeout=seconds + 30,
                )
            line = next((x for x in result.stdout.splitlines() if x.startswith("RESULT ")), None)
            if line is None:
                raise RuntimeError(f"wrk printed no result: {result.stdout[-500:]} {result.stderr[-500:]}")
            return json.loads(line[len("RESULT ") :])

        wrk_run(1)  # warm-up: connections, caches, the allocator
        cpu_before = tree_cpu_seconds([service.pid])
        measured = wrk_run(max(1, int(round(duration_s))))
        cpu = tree_cpu_seconds([service.pid]) - cpu_before
    finally:
        service.stop()
    seconds = measured["duration_us"] / 1e6
    return {
        "rps": round(measured["requests"] / seconds, 1),
        "cpu_us_per_request": round(cpu / max(1, measured["requests"]) * 1e6, 2),
        "p50_ms": measured["p50_us"] / 1000,
        "p99_ms": measured["p99_us"] / 1000,
        "errors": measured["errors"],
        "requests": measured["requests"],
    }


def summarize(rounds: list[dict[str, dict[str, Any]]]) -> dict[str, Any]:
    names = list(rounds[0])
    summary = {
        n: {k: statistics.median(r[n][k] for r in rounds) for k in ("rps", "cpu_us_per_request", "p50_ms", "p99_ms")}
        for n in names
    }
    for n in names:
        summary[n]["errors"] = sum(r[n]["errors"] for r in rounds)
        # Ratios within each round first, then their median: what a noisy machine can still compare.
        summary[n]["rps_vs_reference"] = round(statistics.median(r[n]["rps"] / r[REFERENCE]["rps"] for r in rounds), 3)
        summary[n]["cpu_vs_reference"] = round(
            statistics.median(r[n]["cpu_us_per_request"] / r[REFERENCE]["cpu_us_per_request"] for r in rounds), 3
        )
    return summary


def write_report(out: Path, settings: dict[str, Any], rounds: list[dict[str, Any]], summary: dict[str, Any]) -> None:
    (out / "report.json").write_text(json.dumps({"settings": settings, "rounds": rounds, "targets": summary}, indent=2))
    lines = [
        "# Servers: the same bare endpoint, A/B",
        "",
        f"{settings['rounds']} rounds of {settings['duration_s']} s, {settings['connections']} connections, "
        f"server on core {settings['server_core']}, wrk on core {settings['load_core']}; medians; ratios are "
        f"medians of per-round ratios to `{REFERENCE}`.",
        "",
        "| target | req/s | × ref | CPU µs/request | × ref | p50 ms | p99 ms | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, t in sorted(summary.items(), key=lambda kv: kv[1]["cpu_us_per_request"]):
        lines.append(
            f"| {name} | {t['rps']:.0f} | {t['rps_vs_reference']:.2f} | {t['cpu_us_per_request']:.1f} | "
            f"{t['cpu_vs_reference']:.2f} | {t['p50_ms']:.2f} | {t['p99_ms']:.2f} | {t['errors']} |"
        )
    (out / "report.md").write_text("\n".join(lines) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted(summary, key=lambda n: summary[n]["cpu_us_per_request"])
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    axes[0].barh(names, [summary[n]["rps"] for n in names], color="#3b7dd8")
    axes[0].set_xlabel("requests/s (one worker, one core)")
    axes[1].barh(names, [summary[n]["cpu_us_per_request"] for n in names], color="#e07b39")
    axes[1].set_xlabel("server CPU µs per request")
    for ax in axes:
        ax.invert_yaxis()
    axes[1].set_yticks([])
    fig.suptitle("the same bare endpoint on each server (median of rounds)")
    fig.tight_layout()
    fig.savefig(out / "servers.png", dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.servers", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--duration", type=float, default=5.0, help="measured seconds per target and round (default 5)")
    p.add_argument("--repeat", type=int, default=3, help="rounds, targets alternated (default 3)")
    p.add_argument("--connections", type=int, default=32, help="wrk connections (default 32)")
    p.add_argument("--targets", default=",".join(TARGETS), help=f"subset of {','.join(TARGETS)}")
    p.add_argument("--no-pin", action="store_true", help="do not pin the server and wrk to separate cores")
    args = p.parse_args(argv)
    names = [n for n in args.targets.split(",") if n]
    unknown = [n for n in names if n not in TARGETS]
    if unknown or REFERENCE not in names:
        p.error(f"unknown targets {unknown}" if unknown else f"--targets must include the reference {REFERENCE}")
    if shutil.which("wrk") is None:
        p.error("wrk is not installed: apt-get install -y --no-install-recommends wrk")
    pin = not args.no_pin and len(os.sched_getaffinity(0)) >= 2
    server_core, load_core = sorted(os.sched_getaffinity(0))[:2] if pin else (None, None)
    args.out.mkdir(parents=True, exist_ok=True)
    body_file = args.out / "answer.json"
    body_file.write_bytes(
        json.dumps(
            {
                "offers": [{"offer_id": f"o-{i}", "sku": f"SKU{i}", "score": 0.5, "price": 1.25} for i in range(10)],
                "model_version": "m-1",
                "profile": "hit",
            }
        ).encode()
    )
    rounds = []
    started = time.monotonic()
    for r in range(args.repeat):
        order = names if r % 2 == 0 else names[::-1]
        results = {}
        for i, name in enumerate(order):
            print(
                f"round {r + 1}/{args.repeat}, {name} ({i + 1}/{len(order)}; {time.monotonic() - started:.0f} s)",
                file=sys.stderr,
                flush=True,
            )
            results[name] = run_target(
                name, args.out, args.duration, args.connections, server_core, load_core, body_file
            )
        rounds.append({n: results[n] for n in names})
    summary = summarize(rounds)
    settings = {
        "rounds": args.repeat,
        "duration_s": args.duration,
        "connections": args.connections,
        "server_core": server_core,
        "load_core": load_core,
    }
    write_report(args.out, settings, rounds, summary)
    print((args.out / "report.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
