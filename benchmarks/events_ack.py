"""What a kept event costs: the latency of `POST /v1/events` with `--events-ack write` (202 once the events are
written to the spool's segment file) against `--events-ack fsync` (202 once they are fdatasync'ed too).

    python -m benchmarks.events_ack --out DIR [--duration S] [--concurrency 1,16] [--modes write,fsync]

Starts an origin and, per mode, an edge (real processes on loopback), then drives `POST /v1/events` (one click
per request, a unique request_id each) from one client process over keep-alive connections: closed loop, each
connection sends its next request when the previous answer arrived. Each step runs `--warmup` seconds
unmeasured, then `--duration` seconds measured; modes alternate within a round (`--rounds`), so that a drift of
the machine hits both. Writes DIR/report.json, DIR/report.md and DIR/events_ack.png (latency CDFs). The mode
`default` starts the edge without the flag (the edge's default; also what an edge from before the flag ran).
The work directory (logs, spools, the origin's databases) is removed unless `--keep-work`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from edgerec.cli.process import free_port
from edgerec.cli.services import edge_service, origin_service

REGION = "GB"


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def _request(number: int, connection: int) -> bytes:
    body = json.dumps(
        {
            "events": [
                {"type": "click", "request_id": f"bench-{connection}-{number}", "offer_ids": ["GB-1"], "region": REGION}
            ]
        }
    ).encode()
    return (
        b"POST /v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )


async def _client(
    port: int, connection: int, until: float, warm_until: float, latencies: list[float], statuses: dict[int, int]
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    number = 0
    try:
        while True:
            now = time.perf_counter()
            if now >= until:
                return
            request = _request(number, connection)
            number += 1
            started = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            await reader.readexactly(length)
            elapsed = (time.perf_counter() - started) * 1000
            if started >= warm_until:
                latencies.append(elapsed)
                statuses[status] = statuses.get(status, 0) + 1
    finally:
        writer.close()


async def _step(port: int, concurrency: int, warmup_s: float, duration_s: float) -> dict[str, Any]:
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    warm_until = time.perf_counter() + warmup_s
    until = warm_until + duration_s
    await asyncio.gather(*(_client(port, c, until, warm_until, latencies, statuses) for c in range(concurrency)))
    return {"latencies": latencies, "statuses": statuses}


def _summary(latencies: list[float], statuses: dict[int, int], seconds: float) -> dict[str, Any]:
    return {
        "requests": len(latencies),
        "rps": round(len(latencies) / seconds, 1),
        "p50_ms": round(statistics.median(latencies), 3),
        "p90_ms": round(_percentile(latencies, 90), 3),
        "p99_ms": round(_percentile(latencies, 99), 3),
        "max_ms": round(max(latencies), 3),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
    }


def _plot(path: Path, samples: dict[tuple[str, int], list[float]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    concurrencies = sorted({c for _, c in samples})
    fig, axes = plt.subplots(1, len(concurrencies), figsize=(5.5 * len(concurrencies), 4), squeeze=False)
    for axis, concurrency in zip(axes[0], concurrencies):
        for (mode, c), values in samples.items():
            if c != concurrency or not values:
                continue
            ordered = sorted(values)
            axis.plot(ordered, [i / len(ordered) for i in range(1, len(ordered) + 1)], label=f"--events-ack {mode}")
        axis.set_xscale("log")
        axis.set_xlabel("POST /v1/events latency, ms (log)")
        axis.set_ylabel("fraction of requests")
        axis.set_title(f"{concurrency} concurrent connection(s)")
        axis.grid(True, which="both", alpha=0.3)
        axis.legend()
    fig.suptitle("edgerec: when a 202 is sent (written vs fdatasync'ed), loopback")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.events_ack", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--duration", type=float, default=4.0, help="measured seconds of each step (default 4)")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds before each step (default 1)")
    parser.add_argument("--concurrency", default="1,16", help="connections of each step (default 1,16)")
    parser.add_argument("--modes", default="write,fsync", help="--events-ack values, or default (default write,fsync)")
    parser.add_argument("--rounds", type=int, default=1, help="rounds over the modes; samples pooled (default 1)")
    parser.add_argument("--keep-work", action="store_true", help="keep the work directory (logs, spools, databases)")
    args = parser.parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    concurrencies = [int(c) for c in args.concurrency.split(",") if c.strip()]
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="edgerec-events-ack-bench-"))
    print(f"workdir {work}", flush=True)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass

    admin, token = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    origin = origin_service(work, free_port(), admin, region_tokens={REGION: token})
    samples: dict[tuple[str, int], list[float]] = {(m, c): [] for m in modes for c in concurrencies}
    statuses: dict[tuple[str, int], dict[int, int]] = {(m, c): {} for m in modes for c in concurrencies}
    edges = {}
    try:
        origin.start()
        origin.wait_ready("/healthz")
        for mode in modes:
            extra = [] if mode == "default" else ["--events-ack", mode]
            edge = edge_service(work / mode, REGION, free_port(), origin.url, token, extra)
            edges[mode] = edge.start()
        for edge in edges.values():
            edge.wait_ready("/healthz")  # /v1/events needs no model or catalogue
        for round_no in range(args.rounds):
            for concurrency in concurrencies:
                for mode in modes:
                    print(f"round {round_no + 1}: --events-ack {mode}, {concurrency} connection(s)", flush=True)
                    got = asyncio.run(_step(edges[mode].port, concurrency, args.warmup, args.duration))
                    samples[(mode, concurrency)] += got["latencies"]
                    for status, n in got["statuses"].items():
                        statuses[(mode, concurrency)][status] = statuses[(mode, concurrency)].get(status, 0) + n
    finally:
        for edge in edges.values():
            edge.stop()
        origin.stop()
        if not args.keep_work:
            shutil.rmtree(work, ignore_errors=True)

    seconds = args.duration * args.rounds
    results = {
        mode: {str(c): _summary(samples[(mode, c)], statuses[(mode, c)], seconds) for c in concurrencies}
        for mode in modes
    }
    report = {
        "modes": results,
        "setup": {
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "rounds": args.rounds,
            "events_per_request": 1,
            "client": "one asyncio process, keep-alive connections, closed loop",
            "host_cpus": os.cpu_count(),
            "python": sys.version.split()[0],
            "platform": platform.platform(),
        },
    }
    (out / "report.json").write_text(json.dumps(report, indent=2))
    _plot(out / "events_ack.png", samples)
    rows = "".join(
        f"| {mode} | {c} | {r['requests']} | {r['rps']} | {r['p50_ms']} | {r['p90_ms']} | {r['p99_ms']} | "
        f"{r['max_ms']} | {', '.join(f'{k}: {v}' for k, v in r['statuses'].items())} |\n"
        for mode, by_c in results.items()
        for c, r in by_c.items()
    )
    (out / "report.md").write_text(
        "# edgerec: what a kept event costs\n\n"
        f"`POST /v1/events` (one click a request) against one edge worker per `--events-ack` mode, origin and edges "
        f"on loopback, {args.rounds} round(s) of {args.duration:g} s per step after {args.warmup:g} s of warm-up; "
        f"host: {os.cpu_count()} CPUs shared by the client and the servers.\n\n"
        "`write`: the 202 leaves once the batch holding the events is written (one `write(2)` to the segment: it "
        "survives a SIGKILL of the edge). `fsync`: once the segment is `fdatasync`ed as well (it survives a crash of "
        "the machine). Concurrent requests share one write and one fdatasync (group commit).\n\n"
        "| --events-ack | connections | requests | req/s | p50 ms | p90 ms | p99 ms | max ms | statuses |\n"
        "|---|---|---|---|---|---|---|---|---|\n" + rows + "\n![latency CDFs](events_ack.png)\n"
    )
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
