"""Throughput against worker processes: one edge with `--workers N` for each N, driven by wrk at full speed.

    python -m benchmarks.scaling --out DIR [--workers 1,2] [--granian] [--duration S] [--repeat N] [--bundle DIR]

Starts the origin as the latency benchmark does (same offers, same request mix, the CDN secret, events on), then for
each N an edge of every region with `--workers N` on cores 0..N-1, and wrk on the cores left (one thread per core,
`--connections` per worker). Where N leaves no core for the load, edge and wrk share all cores and the row says so:
that figure is a floor, not the server's capacity. Each N gets a warm-up, then the measured run; with --repeat the
rounds interleave the N's and the median is reported. With --granian each round also serves the same edge app on
granian's ASGI server (benchmarks/edge_granian.py, one worker) beside uvicorn's one worker: the server A/B on one
pinned core with the same answers. Writes DIR/scaling.json, DIR/scaling.md and DIR/scaling.png
(req/s and the efficiency per worker against N, with the linear line through N = 1).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shlex
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from edgerec.cli.process import http_call

from .flame import Recorder, write_flame
from .latency import TARGET_KIND, Bench
from .loadgen import run_wrk, write_wrk_requests, wrk_missing
from .options import interruptible, say
from .processes import CpuSampler, Placement
from .traffic import DEFAULT_REGIONS, build_traffic


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.scaling", description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True, help="directory for scaling.json, scaling.md and scaling.png")
    p.add_argument("--workers", default="1,2", help="comma-separated worker counts (default 1,2)")
    p.add_argument("--duration", type=float, default=8.0, help="measured seconds of each run (default 8)")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds of wrk before each measured run (default 2)")
    p.add_argument("--repeat", type=int, default=1, help="rounds over the worker counts; medians reported")
    p.add_argument("--granian", action="store_true", help="also the edge app on granian (ASGI), one worker")
    p.add_argument(
        "--flame",
        action="store_true",
        help="py-spy each one-worker edge in the first round: flame-*.png, top functions",
    )
    p.add_argument("--connections", type=int, default=16, help="wrk connections per worker (default 16)")
    p.add_argument("--data", default="auto", help="auto (the shared Online Retail data), synthetic, or a CSV path")
    p.add_argument("--bundle", type=Path, help="serve this model bundle instead of training one on --data")
    p.add_argument("--regions", default=",".join(DEFAULT_REGIONS), help="regions of the traffic")
    p.add_argument("--offers-per-region", type=int, default=200, help="candidates per request (default 200)")
    p.add_argument("--anonymous-share", type=float, default=0.3, help="share of anonymous shoppers (default 0.3)")
    p.add_argument("--no-pin", action="store_true", help="do not pin the edge and wrk to separate cores")
    args = p.parse_args(argv)
    try:
        args.worker_counts = sorted({int(x) for x in args.workers.split(",") if x.strip()})
    except ValueError:
        p.error(f"--workers: comma-separated integers, got {args.workers!r}")
    if not args.worker_counts or min(args.worker_counts) < 1:
        p.error("--workers: at least one count, each 1 or more")
    args.servers = args.worker_counts[0]  # what Bench reads for the edge's --workers
    return args


def placement_for(workers: int, pin: bool) -> tuple[Placement, str | None]:
    """N server cores and the rest for wrk; unpinned (and said so) where no core would be left for the load."""
    available = len(os.sched_getaffinity(0))
    if pin and workers < available:
        return Placement.plan(workers, pin=True), None
    return Placement(None, None), f"{workers} workers on {available} cores: edge and wrk share every core"


Config = tuple[str, int]  # (server, workers)


def label(config: Config) -> str:
    return f"{config[0]}-{config[1]}"


def measure(
    bench: Bench, regions: tuple[str, ...], config: Config, round_no: int, requests: Path, sampler: CpuSampler
) -> dict[str, Any]:
    args = bench.args
    server, workers = config
    placement, shared = placement_for(workers, not args.no_pin)
    bench.placement, args.servers = placement, workers
    edge = bench._start_edge(regions, [], f"edge-{label(config)}-r{round_no}", server=server)
    group = f"server:{label(config)}"
    sampler.track(group, [edge.pid])
    try:
        load_cores = placement.load_cores
        threads = len(load_cores) if load_cores else max(1, len(os.sched_getaffinity(0)) // 4)
        connections = max(args.connections * workers, threads)
        runs = bench.out / "runs" / f"round-{round_no}"
        runs.mkdir(parents=True, exist_ok=True)
        run_wrk(
            f"{label(config)}-warmup",
            [edge.url],
            requests,
            connections,
            args.warmup,
            load_cores,
            runs,
            sampler,
            group,
            threads=threads,
        )
        batches_before = inference_batches(edge.url)
        profile = args.flame and round_no == 0 and workers == 1
        collapsed = bench.out / f"flame-{label(config)}.txt"
        with Recorder(edge.pid, args.duration - 1, collapsed) if profile else contextlib.nullcontext() as recorder:
            result = run_wrk(
                label(config),
                [edge.url],
                requests,
                connections,
                args.duration,
                load_cores,
                runs,
                sampler,
                group,
                threads=threads,
            )
        result["mean_batch"] = mean_batch(batches_before, inference_batches(edge.url))
        if recorder is not None:
            png = collapsed.with_suffix(".png")
            title = f"edgerec on {server}, one worker, under wrk at full speed"
            result["flame"] = {"error": recorder.error} if recorder.error else write_flame(collapsed, png, title)
    finally:
        sampler.untrack(group)
        edge.stop()
        bench.cluster.edges.remove(edge)
    result.update(server=server, workers=workers, wrk_threads=threads, placement=placement.describe())
    result.pop("cdf_ms", None)
    if shared:
        result["shared_cores"] = shared
    say(
        f"    {server:8s} {workers:3d} worker(s)  {result['rps']:10.1f} req/s  p50 {result['p50_ms']} ms"
        f"  p99 {result['p99_ms']} ms"
        f"  errors {result['errors']}  edge CPU {result['cpu_percent']}%  wrk CPU {result['loadgen_cpu_percent']}%"
        f"  batch {result['mean_batch']}" + (f"  ({shared})" if shared else "")
    )
    return result


def inference_batches(url: str) -> tuple[float, float]:
    """The edge's model runs so far and the requests they scored (edgerec_inference_batch_size's count and sum,
    all workers' with prometheus-client's multiprocess mode)."""
    status, _, body = http_call(url, "GET", "/metrics")
    if status != 200:
        raise RuntimeError(f"the edge's /metrics answered HTTP {status}")
    values = {"count": 0.0, "sum": 0.0}
    for line in body.decode().splitlines():
        name, _, value = line.partition(" ")
        for key in values:
            if name == f"edgerec_inference_batch_size_{key}":
                values[key] += float(value)
    return values["count"], values["sum"]


def mean_batch(before: tuple[float, float], after: tuple[float, float]) -> float | None:
    """Requests a model run during the measured run (runs are one per pass of the event loop that had any)."""
    runs = after[0] - before[0]
    return round((after[1] - before[1]) / runs, 2) if runs else None


def summarize(rounds: list[dict[str, dict[str, Any]]], configs: list[Config]) -> list[dict[str, Any]]:
    rows = []
    for config in configs:
        runs = [r[label(config)] for r in rounds if label(config) in r]
        row = dict(runs[len(runs) // 2])  # the keys of one run, the figures below the rounds' medians
        row.pop("flame", None)
        for key in ("rps", "p50_ms", "p99_ms", "cpu_percent", "loadgen_cpu_percent", "mean_batch"):
            values = [r[key] for r in runs if r.get(key) is not None]
            row[key] = round(statistics.median(values), 3) if values else None
        row["errors"] = sum(r["errors"] for r in runs)
        row["rounds_rps"] = [r["rps"] for r in runs]
        rows.append(row)
    base = {}
    for row in rows:
        base.setdefault(row["server"], row["rps"] / row["workers"] if row["rps"] else None)
        row["rps_per_worker"] = round(row["rps"] / row["workers"], 1)
        first = base[row["server"]]
        row["efficiency"] = round(row["rps_per_worker"] / first, 3) if first else None
        cpu = row.get("cpu_percent")
        row["cpu_us_per_request"] = round(cpu / 100 * 1e6 / row["rps"], 1) if cpu and row["rps"] else None
    return rows


def server_ab(rounds: list[dict[str, dict[str, Any]]]) -> dict[str, Any]:
    """granian against uvicorn at one worker: the median of the ratios within each round (same machine noise)."""

    def cpu_us(run: dict[str, Any]) -> float | None:
        return run["cpu_percent"] / 100 * 1e6 / run["rps"] if run.get("cpu_percent") and run["rps"] else None

    cpu, rps = [], []
    for rnd in rounds:
        g, u = rnd.get("granian-1"), rnd.get("uvicorn-1")
        if g and u:
            if cpu_us(g) and cpu_us(u):
                cpu.append(cpu_us(g) / cpu_us(u))  # type: ignore[operator]
            if u["rps"]:
                rps.append(g["rps"] / u["rps"])
    return {
        "granian_vs_uvicorn_cpu_per_request": round(statistics.median(cpu), 3) if cpu else None,
        "granian_vs_uvicorn_rps": round(statistics.median(rps), 3) if rps else None,
        "rounds_cpu_ratio": [round(x, 3) for x in cpu],
    }


def write_outputs(out: Path, report: dict[str, Any]) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    json_path = out / "scaling.json"
    json_path.write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        f"# Throughput against `--workers` ({report['machine']['cpus']} CPUs, {report['machine']['processor']})",
        "",
        f"`{report['command']}`",
        "",
        "| server | workers | req/s | req/s per worker | efficiency | p50 ms | p99 ms | errors | edge CPU % "
        "| CPU µs/req | requests a model run | wrk threads | note |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in report["rows"]:
        lines.append(
            f"| {r['server']} | {r['workers']} | {r['rps']:.0f} | {r['rps_per_worker']:.0f} | {r['efficiency']} "
            f"| {r['p50_ms']} "
            f"| {r['p99_ms']} | {r['errors']} | {r['cpu_percent']} | {r['cpu_us_per_request']} | {r.get('mean_batch')} "
            f"| {r['wrk_threads']} "
            f"| {r.get('shared_cores', '')} |"
        )
    if report.get("server_ab"):
        ab = report["server_ab"]
        lines += [
            "",
            f"granian / uvicorn at one worker, CPU per request: {ab['granian_vs_uvicorn_cpu_per_request']}"
            f" (req/s: {ab['granian_vs_uvicorn_rps']})",
        ]
    for name, flame in (report.get("flame") or {}).items():
        lines += ["", f"## Where the CPU goes: {name} (py-spy, {flame.get('samples')} samples)", ""]
        if flame.get("error"):
            lines.append(f"not recorded: {flame['error']}")
            continue
        lines += [f"![flame graph]({flame['png']})", "", "| function | on the stack | at the top |", "|---|---:|---:|"]
        lines += [f"| `{t['function']}` | {t['inclusive']:.1%} | {t['self']:.1%} |" for t in flame["top"][:20]]
    md_path = out / "scaling.md"
    md_path.write_text("\n".join(lines) + "\n")
    rows = [r for r in report["rows"] if r["server"] == "uvicorn"]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    ns = [r["workers"] for r in rows]
    ax.plot(ns, [r["rps"] for r in rows], "o-", label="edgerec (wrk, full speed)")
    if rows and rows[0]["rps"]:
        per = rows[0]["rps"] / rows[0]["workers"]
        ax.plot(ns, [per * n for n in ns], "--", color="grey", label="linear from the first count")
    for r in rows:
        if r.get("shared_cores"):
            ax.annotate("shares cores with wrk", (r["workers"], r["rps"]), fontsize=8)
    ax.set_xlabel("edge worker processes (--workers)")
    ax.set_ylabel("req/s")
    ax.set_xscale("log", base=2)
    ax.set_xticks(ns, [str(n) for n in ns])
    ax.legend()
    ax.grid(alpha=0.3)
    ax2.bar([str(n) for n in ns], [r["efficiency"] or 0 for r in rows])
    ax2.axhline(1.0, color="grey", linestyle="--")
    ax2.set_xlabel("edge worker processes")
    ax2.set_ylabel("req/s per worker, relative to the first count")
    for r in report["rows"]:
        if r["server"] != "uvicorn":
            ax.plot([r["workers"]], [r["rps"]], "s", label=f"the same edge on {r['server']}")
            ax.legend()
    fig.suptitle(f"edgerec throughput against workers ({report['machine']['cpus']} CPUs)")
    fig.tight_layout()
    png_path = out / "scaling.png"
    fig.savefig(png_path, dpi=110)
    plt.close(fig)
    return [json_path, md_path, png_path]


def run(args: argparse.Namespace) -> int:
    started = time.monotonic()
    out: Path = args.out
    for stale in ("work", "runs"):
        if (out / stale).exists():
            shutil.rmtree(out / stale)
    bench = Bench(args)
    bench.work.mkdir(parents=True, exist_ok=True)
    regions = tuple(r.strip().upper() for r in args.regions.split(",") if r.strip())
    counts: list[int] = args.worker_counts
    configs: list[Config] = [("uvicorn", n) for n in counts] + ([("granian", 1)] if args.granian else [])
    try:
        bundle, transactions, data_label = bench.train()
        say(f"[2/3] starting the origin and an edge with {counts[0]} worker(s), loading offers")
        bench.placement, _ = placement_for(counts[0], not args.no_pin)
        bench.start_edgerec(bundle, transactions, regions)
        first = bench.targets["edgerec"]["hosts"][0]
        contract = bench.probe_contract(first, regions[-1])
        manifest = json.loads((bundle / "manifest.json").read_text())
        traffic = build_traffic(transactions, regions, manifest["context_length"], args.anonymous_share)
        requests = write_wrk_requests(
            bench.work / "wrk.tsv", traffic, TARGET_KIND["edgerec"], contract, bench.cdn_secret
        )
        edge = bench.cluster.edges.pop()  # each count gets its own edge below, started the same way
        edge.stop()
        say(f"[3/3] measuring {[label(c) for c in configs]}, {args.repeat} round(s), {args.duration:g} s each")
        rounds: list[dict[str, dict[str, Any]]] = []
        with CpuSampler() as sampler:
            for round_no in range(args.repeat):
                order = configs if round_no % 2 == 0 else configs[::-1]
                rounds.append({label(c): measure(bench, regions, c, round_no, requests, sampler) for c in order})
        rows = summarize(rounds, configs)
        report = {
            "command": "python -m benchmarks.scaling " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
            "machine": {
                "cpus": len(os.sched_getaffinity(0)),
                "processor": platform.processor() or platform.machine(),
                "python": platform.python_version(),
                "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
            },
            "settings": {
                "duration_s": args.duration,
                "warmup_s": args.warmup,
                "repeat": args.repeat,
                "connections_per_worker": args.connections,
                "data": data_label,
                "regions": list(regions),
                "offers_per_region": args.offers_per_region,
                "anonymous_share": args.anonymous_share,
                "events": "on",
                "contract": contract.to_json(),
            },
            "rows": rows,
            "server_ab": server_ab(rounds) if args.granian else None,
            "flame": {name: run["flame"] for name, run in rounds[0].items() if "flame" in run} if rounds else {},
            "rounds": rounds,
            "wall_seconds": round(time.monotonic() - started, 1),
        }
        for path in write_outputs(out, report):
            say(f"  wrote {path}")
        return 0
    finally:
        bench.stop_all()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    missing = wrk_missing()
    if missing:
        print(missing, file=sys.stderr)
        return 2
    return interruptible(run, args)


if __name__ == "__main__":
    sys.exit(main())
