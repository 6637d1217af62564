"""The cost of tracing on the edge's hot path, in process and so without the network's noise: CPU µs a request through
the real `/v1/recommendations` endpoint (real EdgeState, real ONNX ranker, one request a batch), tracing off, at a
sample, and on for every answer; and, with --baseline, the same tree without tracing (e.g. main) off.

    python -m benchmarks.tracing_cost --out DIR [--baseline /path/to/other/checkout] [--requests N] [--rounds R]

Variants run as separate processes, alternating round by round (the machine is shared and noisy); the report gives
each variant's median over rounds and the ratios to tracing off. Writes DIR/report.json, DIR/report.md and
DIR/tracing_cost.png.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
VARIANTS = ("off", "sample", "all")  # tracing off, at --sample of new traces, every answer


def worker(bundle: Path, variant: str, sample: float, requests: int) -> dict[str, Any]:
    """One variant in this process (the tree on PYTHONPATH): CPU µs a request, median of 5 slices."""
    import asyncio

    from edge_node.cdn import CdnPolicy
    from edge_node.metrics import EdgeMetrics
    from edge_node.recommendations import RecommendationsEndpoint
    from edge_node.rules import Rules
    from edge_node.state import EdgeState, StateHolder
    from models.runtime import Ranker
    from origin_sync.replica import Replica
    from origin_sync.wire.offers import validate_offer

    ranker = Ranker.load(bundle)
    skus = json.loads((bundle / "manifest.json").read_text())["items"]
    offers = [
        {"id": f"GB-{sku}", "sku": sku, "title": sku, "price": 9.99, "currency": "GBP", "stock": 5, "regions": ["GB"]}
        for sku in skus[:200]
    ]
    replica = Replica(version=5, regions=("GB",), offers={o["id"]: validate_offer(o) for o in offers}, model=None)
    holder = StateHolder()
    holder.current = EdgeState.build(replica, ranker)
    options: dict[str, Any] = {}
    tracing = None
    if variant != "off":
        from edgerec.core.tracing import configure

        tracing = configure("bench", sample if variant == "sample" else 1.0, "otlp")
        options["tracing"] = tracing
    # No latency budget: a run the shared machine stalls must not send the rest of the run to the fallback.
    rules = Rules(model_budget_ms=1e9)
    endpoint = RecommendationsEndpoint(holder, EdgeMetrics(), CdnPolicy(), rules, 65536, 100, 10, **options)
    body = json.dumps({"shopper_id": "shopper-1", "recent_items": skus[:5], "k": 10, "region": "GB"}).encode()
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/recommendations",
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        "client": ("127.0.0.1", 40000),
        "query_string": b"",
    }
    message = {"type": "http.request", "body": body, "more_body": False}

    async def receive() -> dict[str, Any]:
        return message

    async def send(_: dict[str, Any]) -> None:
        pass

    async def run() -> list[float]:
        for _ in range(500):  # warm-up
            await endpoint(scope, receive, send)
        slices = []
        for _ in range(5):
            # CPU time of the whole process (the exporter's thread included): a shared machine's other work, which
            # steals the core and stretches wall time, does not count.
            started = time.process_time()
            for _ in range(requests // 5):
                await endpoint(scope, receive, send)
            slices.append((time.process_time() - started) / (requests // 5) * 1e6)
        return slices

    slices = asyncio.run(run())
    if tracing is not None:
        tracing.shutdown()
    return {"us_per_request": round(statistics.median(slices), 2), "slices": [round(s, 2) for s in slices]}


def run_variant(tree: Path, bundle: Path, variant: str, sample: float, requests: int, sink: str) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(tree), "OTEL_EXPORTER_OTLP_ENDPOINT": sink}
    argv = [sys.executable, str(Path(__file__).resolve()), "--worker", variant, "--bundle", str(bundle)]
    argv += ["--sample", str(sample), "--requests", str(requests), "--out", "-"]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600, cwd=tree)
    if done.returncode != 0:
        raise RuntimeError(f"{variant} on {tree} failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.tracing_cost", description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="directory for report.json, report.md and tracing_cost.png")
    p.add_argument("--baseline", type=Path, default=None, help="another checkout to measure with tracing off too")
    p.add_argument("--requests", type=int, default=5000, help="requests a variant a round (default 5000)")
    p.add_argument("--rounds", type=int, default=5, help="rounds, variants alternating (default 5)")
    p.add_argument("--sample", type=float, default=0.01, help="the sample variant's EDGEREC_TRACE_SAMPLE (0.01)")
    p.add_argument("--bundle", type=Path, default=None, help="model bundle (default: trained on synthetic data)")
    p.add_argument("--worker", choices=VARIANTS, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        sys.path[:] = [x for x in sys.path if Path(x or ".").resolve() != Path(__file__).resolve().parent]
        print(json.dumps(worker(args.bundle, args.worker, args.sample, args.requests)))
        return 0
    sys.path.insert(0, str(REPO))
    from benchmarks.otlp_sink import OtlpSink

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    bundle = args.bundle
    if bundle is None:
        from models.synthetic import write_synthetic_transactions
        from models.train import train_bundle

        bundle = out / "bundle"
        if not (bundle / "manifest.json").exists():
            data = write_synthetic_transactions(out / "transactions.csv.gz", seed=7)
            train_bundle(data, bundle, progress=False)
    sink = OtlpSink().start()
    plan = [(REPO, v) for v in VARIANTS] + ([(args.baseline.resolve(), "off")] if args.baseline else [])
    names = [*VARIANTS, *(["baseline_off"] if args.baseline else [])]
    results: dict[str, list[float]] = {n: [] for n in names}
    try:
        for round_no in range(args.rounds):
            shift = round_no % len(plan)  # each round starts from another variant
            for (tree, variant), name in list(zip(plan, names))[shift:] + list(zip(plan, names))[:shift]:
                measured = run_variant(tree, bundle, variant, args.sample, args.requests, sink.endpoint)
                results[name].append(measured["us_per_request"])
                print(f"round {round_no + 1} {name:13s} {measured['us_per_request']:8.2f} µs/request", flush=True)
    finally:
        sink.stop()
    medians = {n: round(statistics.median(v), 2) for n, v in results.items()}
    ratios = {f"{n}_vs_off": round(medians[n] / medians["off"], 3) for n in medians if n != "off"}
    command = "python -m benchmarks.tracing_cost " + " ".join(sys.argv[1:] if argv is None else argv)
    report = {
        "schema": "edgerec-tracing-cost/1",
        "command": command,
        "sample": args.sample,
        "requests_per_round": args.requests,
        "rounds": results,
        "median_us_per_request": medians,
        "ratios": ratios,
        "otlp_exports_received": sink.requests,
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }
    (out / "report.json").write_text(json.dumps(report, indent=2))
    labels = {
        "off": "tracing off",
        "sample": f"tracing a {args.sample:g} sample",
        "all": "tracing every answer",
        "baseline_off": f"baseline ({args.baseline}), off",
    }
    lines = [
        "# Tracing on the edge's hot path (in process)",
        "",
        f"Command: `{command}`  ",
        f"{args.rounds} rounds of {args.requests} requests a variant, alternating; medians over rounds. "
        "One request a batch, POST with 5 recent items, k=10, 200 candidates; OTLP/HTTP to a local sink.",
        "",
        "| variant | µs a request (median) | / tracing off | rounds |",
        "|---|---:|---:|---|",
        *[
            f"| {labels[n]} | {medians[n]} | {medians[n] / medians['off']:.3f} | {', '.join(map(str, results[n]))} |"
            for n in names
        ],
        "",
        f"Load average at the end: {report['load_average']}.",
        "",
        "![tracing_cost.png](tracing_cost.png)",
        "",
    ]
    (out / "report.md").write_text("\n".join(lines))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.bar([labels[n] for n in names], [medians[n] for n in names], color="#3b7dd8")
    ax.set_ylabel("µs a request (median over rounds)")
    ax.set_title("edgerec /v1/recommendations in process: tracing off, sampled, on", fontsize=10)
    ax.tick_params(axis="x", labelsize=8)
    fig.tight_layout()
    fig.savefig(out / "tracing_cost.png", dpi=110)
    print(json.dumps({"median_us_per_request": medians, "ratios": ratios}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
