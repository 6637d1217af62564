"""Latency under load: edgerec against its ceiling, two peer model servers, itself behind a CDN cache, itself
with impressions off (the events on/off cost) and itself tracing a sample of its answers (the tracing cost).

    python -m benchmarks.latency --out DIR [--duration S] [--users U] [--repeat N] [--servers N]
    python -m benchmarks.latency --out DIR --profiles N [--catalog-offers M] [--repeat N]  (benchmarks.profiles_mode)

Starts everything as a user would (origin, edge, bare Starlette, MLServer, PyTriton, Varnish: processes on
loopback, servers pinned apart from the load), drives realistic shopper traffic with locust, cross-checks
throughput with wrk, and writes DIR/report.json, DIR/report.md, DIR/latency_cdf.png and
DIR/throughput_p99.png (and DIR/events_on_off.png). Per target and round: a closed-loop peak run, a wrk run,
then fixed-rate steps at fractions of the peak, from which the knee (highest req/s with p99 under 10 ms) is read.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import secrets
import shlex
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

from edgerec.cli.process import Service, free_port, http_call
from edgerec.cli.services import Cluster

from . import cdn, peer
from .histogram import Histogram
from .loadgen import LoadSettings, run_locust, run_wrk, write_wrk_requests, wrk_missing
from .options import add_data_option, benchmark_parser, say
from .otlp_sink import OtlpSink
from .processes import CpuSampler, Placement, cores
from .report import EVENTS_BUDGET, ORDER, PEERS, build_report, write_outputs
from .traffic import (
    DEFAULT_REGIONS,
    GEO_HEADER,
    PATH,
    SECRET_HEADER,
    Contract,
    RequestMix,
    build_traffic,
    regional_offers,
    resolve_data,
    save_traffic,
)

REPO = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = benchmark_parser("latency", __doc__, "report.json, report.md and the plots")
    p.add_argument("--duration", type=float, default=5.0, help="measured seconds of each step (default 5)")
    p.add_argument("--users", type=int, default=32, help="concurrent locust users, also wrk's connections (default 32)")
    p.add_argument("--repeat", type=int, default=1, help="rounds over all targets; medians reported (default 1)")
    p.add_argument(
        "--servers",
        type=int,
        default=1,
        help="server worker processes per target and cores they get (default 1): the edge's --workers, "
        "the ceiling's uvicorn workers, the peer's MLServer instances; scale up on bigger machines",
    )
    p.add_argument(
        "--locust-processes", type=int, default=0, help="locust processes (default: one per core left to the load)"
    )
    p.add_argument(
        "--steps",
        default="0.25,0.5,0.7,0.85",
        help="fixed-rate steps as fractions of each target's peak (0.7 always included)",
    )
    p.add_argument("--warmup", type=float, default=1.0, help="seconds of each run not measured (default 1)")
    add_data_option(p)
    p.add_argument(
        "--bundle",
        type=Path,
        default=None,
        help="serve this model bundle instead of training one on --data (which still feeds the traffic)",
    )
    p.add_argument("--regions", default=",".join(DEFAULT_REGIONS), help="regions of the traffic (default GB,DE,FR)")
    p.add_argument("--offers-per-region", type=int, default=200, help="candidates per request (default 200)")
    p.add_argument("--anonymous-share", type=float, default=0.3, help="share of anonymous shoppers (default 0.3)")
    p.add_argument("--targets", default=",".join(ORDER), help=f"subset of {','.join(ORDER)} (peer: both peers)")
    p.add_argument(
        "--quick", action="store_true", help="smoke mode: no peer (no venv made), only the 0.7 step; for tests"
    )
    p.add_argument(
        "--trace-sample",
        type=float,
        default=0.01,
        help="EDGEREC_TRACE_SAMPLE of the edgerec_traced target, exporting OTLP to a local sink (default 0.01)",
    )
    p.add_argument("--no-wrk", action="store_true", help="skip the wrk cross-check")
    p.add_argument("--no-pin", action="store_true", help="do not pin servers and load to separate cores")
    p.add_argument(
        "--peer-venv",
        type=Path,
        default=None,
        help=f"MLServer's venv (default {peer.PEERS['peer_mlserver'].default_venv_dir()}); made on first use",
    )
    p.add_argument(
        "--pytriton-venv",
        type=Path,
        default=None,
        help=f"PyTriton's venv (default {peer.PEERS['peer_pytriton'].default_venv_dir()}); made on first use",
    )
    p.add_argument(
        "--peer-parallel-workers",
        type=int,
        default=0,
        help="MLServer parallel_workers (default 0: inference in the server process, like edgerec)",
    )
    from .profiles_mode import add_arguments

    add_arguments(p)
    args = p.parse_args(argv)
    if args.profiles < 0:
        p.error("--profiles: a number of shoppers")
    if args.duration <= 0 or args.users < 1 or args.repeat < 1 or args.servers < 1:
        p.error("--duration, --users, --repeat and --servers must be positive")
    unknown = set(args.targets.split(",")) - set(ORDER) - {"peer"}
    if unknown:
        p.error(f"--targets: unknown {', '.join(sorted(unknown))}")
    targets = args.targets.split(",")
    if "peer" in targets:  # both peers; the report's `peer` is the best of them
        args.targets = ",".join(dict.fromkeys(t for name in targets for t in (PEERS if name == "peer" else (name,))))
    return args


# ---------------------------------------------------------------- machine


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _tool_version(argv: list[str]) -> str | None:
    if not shutil.which(argv[0]):
        return None
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        text = (out.stdout or out.stderr).strip().splitlines()
        return text[0] if text else None
    except (OSError, subprocess.SubprocessError):
        return None


def machine_info(placement: Placement) -> dict[str, Any]:
    cpu_model = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    os_name = None
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                os_name = line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    try:
        import psutil

        memory = round(psutil.virtual_memory().total / 2**30, 1)
    except Exception:  # noqa: BLE001 - the figure is informative only
        memory = None
    commit = None
    try:
        commit = (
            subprocess.run(
                ["git", "-C", str(REPO), "describe", "--always", "--dirty"], capture_output=True, text=True, timeout=10
            ).stdout.strip()
            or None
        )
    except (OSError, subprocess.SubprocessError):
        pass
    return {
        "cpu_model": cpu_model,
        "logical_cpus": os.cpu_count(),
        "memory_gib": memory,
        "os": os_name,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "placement": placement.describe(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "git": commit,
        "versions": {
            **{
                p: _version(p)
                for p in ("starlette", "uvicorn", "uvloop", "httptools", "onnxruntime", "numpy", "locust", "orjson")
            },
            "wrk": _tool_version(["wrk", "--version"]),
            "varnish": _tool_version(["varnishd", "-V"]),
        },
    }


# ---------------------------------------------------------------- set-up


class Bench:
    """Everything one run started, stopped in reverse order at the end whatever happens."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.out: Path = args.out
        self.work = self.out / "work"
        self.placement = Placement.plan(args.servers, pin=not args.no_pin)
        self.started: list[Callable[[], None]] = []
        self.cdn_secret = secrets.token_urlsafe(24)
        self.targets: dict[str, dict[str, Any]] = {}  # name -> {"hosts", "group"} or {"skipped"}
        self.server_pids: dict[str, list[int]] = {}

    def stop_all(self) -> None:
        for stop in reversed(self.started):
            try:
                stop()
            except Exception as exc:  # noqa: BLE001 - keep stopping the rest
                say(f"  (stopping a process failed: {exc})")
        self.started.clear()

    def start_service(self, service: Service, cpu_set: tuple[int, ...] | None) -> None:
        with cores(cpu_set):
            service.start()
        self.started.append(service.stop)

    # ------------------------------------------------------------ edgerec

    def train(self) -> tuple[Path, Any, str]:
        from models.data import read_transactions
        from models.synthetic import write_synthetic_transactions
        from models.train import train_bundle

        data, label = resolve_data(self.args.data)
        if data is None:
            data = write_synthetic_transactions(self.work / "transactions.csv.gz", seed=7)
        if self.args.bundle:
            say(f"[1/5] serving the bundle {self.args.bundle}; traffic from {label}")
            bundle = self.work / "bundle"
            shutil.copytree(self.args.bundle, bundle)
            manifest = json.loads((bundle / "manifest.json").read_text())
            say(f"      model {manifest['version']}: {len(manifest['items'])} items")
            return bundle, read_transactions(data), label
        say(f"[1/5] training the ranking model on {label}")
        t0 = time.perf_counter()
        bundle = self.work / "bundle"
        manifest = train_bundle(data, bundle, progress=False)
        say(f"      model {manifest['version']}: {len(manifest['items'])} items, {time.perf_counter() - t0:.1f} s")
        return bundle, read_transactions(data), label

    def start_edgerec(self, bundle: Path, transactions: Any, regions: tuple[str, ...]) -> tuple[list[dict], Any]:
        from models.data import purchase_events

        cluster = self.cluster = Cluster(self.work, bundle, regions=regions)
        with cores(self.placement.load_cores):  # the origin is kept off the server cores
            cluster.origin.start()
        self.started.append(cluster.stop)  # its edges, then the origin
        # It shares the load generators' core(s): its ingest of the shipped events (a burst of tens of ms every
        # second) would stall them and show up as the edge's latency. At the lowest priority it waits for idle CPU,
        # as it would run on its own hosts in a deployment (the edges' spools hold the events meanwhile).
        os.setpriority(os.PRIO_PROCESS, cluster.origin.pid, 19)
        cluster.origin.wait_ready("/healthz")
        cluster.publish()
        manifest = json.loads((bundle / "manifest.json").read_text())
        events = purchase_events(transactions)
        offers = regional_offers(transactions, events, regions, self.args.offers_per_region, set(manifest["items"]))
        cluster.put_offers(offers)
        counts = {r: sum(1 for o in offers if r in o["regions"]) for r in regions}
        say(
            f"      origin {cluster.origin.url}: {len(offers)} offers "
            f"({', '.join(f'{r} {n}' for r, n in counts.items())})"
        )
        self.offer_counts = counts
        # One edge serving all the traffic's regions with --servers worker processes, as it runs in production.
        edge = self._start_edge(regions, [], "edge")
        self.targets["edgerec"] = {"hosts": [edge.url], "pids": [edge.pid]}
        return offers, counts

    def start_edgerec_no_events(self, regions: tuple[str, ...]) -> None:
        """A second edge like the first (same origin, regions, workers, cores) with events off (EDGEREC_EVENTS=off:
        no impression recorded, no spool, no shipper), for the events on/off ratio measured in the same rounds."""
        self._start_variant(
            regions,
            "edgerec_no_events",
            "edge (events off)",
            ["--events", "off"],
            "the same edge with --events off (no impressions, no spool, no shipper); compare with edgerec "
            "within a round (ratios.events_on_vs_off_rps)",
        )

    def start_edgerec_traced(self, regions: tuple[str, ...]) -> None:
        """A third edge like the first with tracing on at --trace-sample, exporting OTLP/HTTP to a local sink that
        answers every export (so the SDK's whole exporting work is done), for the tracing on/off ratio."""
        sink = OtlpSink().start()
        self.started.append(sink.stop)
        env = {
            "EDGEREC_TRACE_SAMPLE": str(self.args.trace_sample),
            "EDGEREC_TRACE_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_ENDPOINT": sink.endpoint,
        }
        target = self._start_variant(
            regions,
            "edgerec_traced",
            "edge (traced)",
            [],
            f"the same edge tracing a {self.args.trace_sample:g} sample of new traces, OTLP/HTTP to a local "
            "sink; compare with edgerec (tracing off) within a round (ratios.traced_vs_untraced_rps)",
            env,
        )
        target["sink"] = sink

    def start_edgerec_access_log(self, regions: tuple[str, ...]) -> None:
        """A second edge like the first with the access log on (EDGEREC_ACCESS_LOG=on: a JSON line per request to
        its log file), for the access log's cost measured in the same rounds."""
        self._start_variant(
            regions,
            "edgerec_access_log",
            "edge (access log on)",
            ["--access-log", "on"],
            "the same edge with --access-log on (a JSON line per request); compare with edgerec within a "
            "round (ratios.access_log_on_vs_off_rps)",
        )

    def _start_variant(
        self,
        regions: tuple[str, ...],
        target: str,
        shown: str,
        args: list[str],
        note: str,
        env: dict[str, str] | None = None,
        server: str = "uvicorn",
    ) -> dict[str, Any]:
        """A further edge like the first but for `args` and `env`, served as `target` with `note` for the report;
        its log label follows the target's name (edgerec_no_events: edge-no-events)."""
        edge = self._start_edge(regions, args, target.replace("edgerec_", "edge-").replace("_", "-"), env, server)
        edge.name = shown
        self.targets[target] = {"hosts": [edge.url], "pids": [edge.pid], "note": note}
        return self.targets[target]

    def start_edgerec_granian(self, regions: tuple[str, ...]) -> None:
        """A further edge like the first, its app served by granian's ASGI server instead of uvicorn
        (benchmarks/edge_granian.py), for the server A/B measured in the same rounds."""
        self._start_variant(
            regions,
            "edgerec_granian",
            "edge (granian)",
            [],
            "the same edge app on granian (ASGI, uvloop, one worker and runtime thread); compare with "
            "edgerec (uvicorn) within a round (ratios.granian_vs_uvicorn_capacity_at_full_cpu)",
            server="granian",
        )

    def _start_edge(
        self,
        regions: tuple[str, ...],
        args: list[str],
        label: str,
        env: dict[str, str] | None = None,
        server: str = "uvicorn",
    ) -> Service:
        """An edge of every region with --servers workers and the CDN secret, on the server cores, serving every
        offer."""
        edge = self.cluster.edge(
            ",".join(regions),
            # The embedded profile store is one process's: several workers would need the region's Redis.
            args=[
                "--workers",
                str(self.args.servers),
                "--profile-store",
                "embedded" if self.args.servers == 1 else "off",
                *args,
            ],
            env={"EDGEREC_CDN_SECRET": self.cdn_secret, **(env or {})},
            label=label,
        )
        if server == "granian":
            edge.argv = [sys.executable, "-m", "benchmarks.edge_granian", *edge.args]
        with cores(self.placement.server_cores):
            self.cluster.start_edges(edge, timeout_s=60)
        self.cluster.wait_for_version(0, self.offer_counts, timeout_s=30)
        return edge

    def probe_contract(self, url: str, region: str) -> Contract:
        """Which form of the API the edge speaks: the anonymous GET and the geo header may not exist yet."""
        cdn_headers = {GEO_HEADER: region, SECRET_HEADER: self.cdn_secret}

        def answered_region(method: str, path: str, body: dict | None) -> str | None:
            raw = json.dumps(body).encode() if body is not None else None
            headers = {**cdn_headers, **({"Content-Type": "application/json"} if raw else {})}
            status, _, data = http_call(url, method, path, raw, headers)
            if status != 200:
                return None
            try:
                return json.loads(data).get("region")
            except ValueError:
                return None

        post_geo = answered_region("POST", PATH, {"k": 3}) == region
        get_geo = answered_region("GET", f"{PATH}?k=3", None) == region
        get_query = get_geo or answered_region("GET", f"{PATH}?region={region}&k=3", None) == region
        return Contract(anonymous_get=get_query, geo_header=post_geo and (get_geo or not get_query))

    def typical_answer(self, url: str, traffic: dict[str, Any], contract: Contract) -> bytes:
        """An edgerec answer for a returning shopper with k=10: the ceiling answers bytes of this size."""
        region = next(iter(traffic["regions"]))
        mix = RequestMix(traffic, "edgerec", contract, self.cdn_secret, seed=1)
        pool = traffic["returning"][region]
        req = mix.returning_shopper(region, 10, pool[0]) if pool else mix.anonymous(region, 10)
        status, _, body = http_call(url, req.method, req.path, req.body, req.headers)
        if status != 200:
            raise RuntimeError(f"the edge answered HTTP {status} to a typical request: {body[:300]!r}")
        return body

    # ------------------------------------------------------------ other targets

    def start_ceiling(self, body: bytes, raw: bool = False) -> None:
        """The ceiling: a bare Starlette endpoint on uvicorn answering precomputed JSON; with `raw`, the second
        reference: the fastest bare endpoint on the edge's own server (a raw ASGI callable on uvicorn)."""
        name = "ceiling_raw" if raw else "ceiling"
        body_file = self.work / "ceiling-answer.json"
        body_file.write_bytes(body)
        port = free_port()
        proc = Service(
            name=name,
            port=port,
            log_path=self.work / "logs" / f"{name}.log",
            cwd=REPO,
            argv=[
                sys.executable,
                "-m",
                "benchmarks.ceiling",
                "--port",
                str(port),
                "--workers",
                str(self.args.servers),
                "--body-file",
                str(body_file),
                *(["--raw"] if raw else []),
            ],
        )
        self.start_service(proc, self.placement.server_cores)
        proc.wait_ready("/healthz", timeout_s=30)
        hosts, pids = [f"http://127.0.0.1:{port}"], [proc.pid]
        answer = f"a fixed {len(body)}-byte JSON (an edgerec answer for k=10)"
        self.targets[name] = {
            "hosts": hosts,
            "pids": pids,
            "note": f"a raw ASGI callable on uvicorn (the edge's server): reads the request, answers {answer}"
            if raw
            else f"answers {answer} without reading the request",
        }

    def start_peer(
        self, name: str, bundle: Path, offers: list[dict], traffic: dict[str, Any], contract: Contract
    ) -> None:
        """One peer (benchmarks/peer.py PEERS): its venv, --servers instances on the server cores, a parity check."""
        spec = peer.PEERS[name]
        if self.args.quick:
            self.targets[name] = {"skipped": "--quick (no peer venv made in smoke mode)", "name": spec.label}
            return
        venv = {"peer_mlserver": self.args.peer_venv, "peer_pytriton": self.args.pytriton_venv}[name]
        workdir = self.work / name
        try:
            python = spec.ensure_venv(venv or spec.default_venv_dir(), self.work / "logs" / f"{name}-venv.log")
        except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
            self.targets[name] = {"skipped": f"could not make the peer's venv: {exc}", "name": spec.label}
            return
        version = spec.versions(python)
        settings = peer.InstanceSettings(bundle, offers, self.args.peer_parallel_workers)
        hosts, pids = [], []
        for i in range(self.args.servers):
            proc, url = spec.instance(python, workdir, i, settings)
            with cores(self.placement.server_cores):
                proc.start()
            self.started.append(functools.partial(peer.stop_instance, proc))
            for path in spec.ready_paths:
                proc.wait_ready(path, timeout_s=120)
            hosts.append(url)
            pids.append(proc.pid)
        config = {
            "peer_mlserver": "custom runtime (benchmarks/peer_runtime/mlserver_runtime.py), parallel_workers="
            f"{self.args.peer_parallel_workers}, debug false, gzip_enabled false",
            "peer_pytriton": "@batch inference function (benchmarks/peer_runtime/pytriton_runtime.py), dynamic "
            "batching (max batch 64, no queue delay), one ONNX run per batch; string tensors padded to a power "
            "of two so that requests share shapes",
        }[name]
        self.targets[name] = {
            "hosts": hosts,
            "pids": pids,
            "name": spec.label,
            "version": version,
            "config": f"{config}, {self.args.servers} instance(s); {version}",
            "parity": self.peer_parity(name, hosts[0], traffic, contract),
            "note": "Open Inference Protocol JSON in and out; answers offer ids and scores only "
            "(edgerec also returns title, price and currency per offer)",
        }

    def peer_parity(self, name: str, peer_url: str, traffic: dict[str, Any], contract: Contract) -> str:
        """The same shoppers through edgerec and the peer must get the same offers in the same order."""
        edge_url = self.targets["edgerec"]["hosts"][0]
        edge_mix = RequestMix(traffic, "edgerec", contract, self.cdn_secret, seed=99)
        peer_mix = RequestMix(traffic, TARGET_KIND[name], contract, self.cdn_secret, seed=99)
        same = total = 0
        for _ in range(30):
            a, b = edge_mix.next(), peer_mix.next()
            sa, _, ra = http_call(edge_url, a.method, a.path, a.body, a.headers)
            sb, _, rb = http_call(peer_url, b.method, b.path, b.body, b.headers)
            if sa != 200 or sb != 200:
                continue
            total += 1
            edge_ids = [o["offer_id"] for o in json.loads(ra)["offers"]]
            outputs = {o["name"]: o["data"] for o in json.loads(rb)["outputs"]}
            # Triton's batched answers end in empty ids where an answer is shorter than its batch's longest.
            same += edge_ids == [offer_id for offer_id in outputs.get("offer_ids", []) if offer_id]
        return f"{same}/{total} sampled requests got the same offers in the same order from both"

    def start_cdn(self, contract: Contract) -> None:
        reason = cdn.missing()
        if reason:
            self.targets["edgerec_cdn"] = {"skipped": reason}
            say(f"      CDN target skipped: {reason}")
            return
        if not contract.anonymous_get:
            self.targets["edgerec_cdn"] = {
                "skipped": "the edge answers GET /v1/recommendations with 405: the "
                "anonymous CDN-cacheable form is not in this edge yet"
            }
            return
        hosts, pids = [], []
        for i, edge_url in enumerate(self.targets["edgerec"]["hosts"]):
            proc, url, vcl_source = cdn.varnish_process(
                self.work / f"varnish-{i}", int(edge_url.rsplit(":", 1)[1]), self.cdn_secret
            )
            self.start_service(proc, self.placement.server_cores)
            proc.wait_ready("/healthz", timeout_s=30)
            hosts.append(url)
            pids.append(proc.pid)
        # The CDN's CPU is the cache's plus the edges' it still calls on misses.
        self.targets["edgerec_cdn"] = {
            "hosts": hosts,
            "pids": pids + self.targets["edgerec"]["pids"],
            "note": f"Varnish with {vcl_source}; anonymous GETs only, the geo header "
            "standing in for the CDN's own geo lookup",
            "varnish_dirs": [self.work / f"varnish-{i}" for i in range(len(hosts))],
        }


TARGET_KIND = {
    "edgerec": "edgerec",
    "edgerec_no_events": "edgerec",
    "edgerec_traced": "edgerec",
    "edgerec_access_log": "edgerec",
    "edgerec_granian": "edgerec",
    "ceiling": "ceiling",
    "ceiling_raw": "ceiling",
    "peer_mlserver": "peer",
    "peer_pytriton": "peer_padded",
    "edgerec_cdn": "cdn",
}


def measure_target(
    bench: Bench,
    name: str,
    round_no: int,
    load: LoadSettings,
    sampler: CpuSampler,
    wrk_files: dict[str, Path],
    steps: list[float],
) -> dict[str, Any]:
    args = bench.args
    target = bench.targets[name]
    if "skipped" in target:
        return {k: target[k] for k in ("skipped", "name") if k in target}
    hosts, group, kind = target["hosts"], f"server:{name}", TARGET_KIND[name]
    runs = bench.out / "runs" / f"round-{round_no}"
    runs.mkdir(parents=True, exist_ok=True)
    counters_before = _cache_counters(target)
    result: dict[str, Any] = {k: target[k] for k in ("name", "version", "config", "parity", "note") if k in target}
    warm_up(bench, name, kind, hosts, load, sampler, wrk_files, runs)
    peak = run_locust(f"{name}-peak", kind, hosts, load, args.duration, 0.0, runs, sampler, group)
    peak["load_cores"] = max(1, load.locust_processes)
    peak["server_cores"] = len(load.server_cores or ()) or 1
    result["peak"] = peak
    say(
        f"    {name:12s} peak   {peak['rps']:9.1f} req/s  p50 {peak['p50_ms']} ms  p99 {peak['p99_ms']} ms  "
        f"errors {peak['errors']}  server CPU {peak['cpu_percent']}%  locust CPU {peak['loadgen_cpu_percent']}%"
    )
    if args.no_wrk:
        result["wrk"] = {"skipped": "--no-wrk"}
    elif wrk_missing():
        result["wrk"] = {"skipped": wrk_missing()}
    else:

        def measured_wrk(label: str, rate: float = 0.0) -> dict[str, Any]:
            seconds = args.duration + args.warmup
            return run_wrk(
                f"{name}-{label}",
                hosts,
                wrk_files[kind],
                args.users,
                seconds,
                load.load_cores,
                runs,
                sampler,
                group,
                rate,
            )

        wrk = measured_wrk("wrk")
        wrk["load_cores"] = len(hosts)  # one single-threaded wrk per host
        wrk["server_cores"] = len(load.server_cores or ()) or 1
        result["wrk"] = wrk
        say(
            f"    {name:12s} wrk    {wrk['rps']:9.1f} req/s  p50 {wrk['p50_ms']} ms  p99 {wrk['p99_ms']} ms  "
            f"errors {wrk['errors']}  server CPU {wrk['cpu_percent']}%"
        )
        # The latency at 70% of that peak, at a fixed arrival rate from wrk: locust's own jitter on the shared
        # load core sets a floor of several ms under its p99 (the bare ceiling shows it too); wrk's is far lower.
        rate = round(0.7 * wrk["rps"], 1)
        at70 = measured_wrk("wrk-70", rate)
        at70["offered_rps"], at70["fraction"] = rate, 0.7
        result["wrk_at_70"] = at70
        say(
            f"    {name:12s} wrk 70% {at70['rps']:8.1f} req/s (offered {rate})  p50 {at70['p50_ms']} ms  "
            f"p99 {at70['p99_ms']} ms  late sends {at70['late_sends']}  server CPU {at70['cpu_percent']}%"
        )
    result["steps"] = []
    for fraction in steps:
        rate = round(fraction * peak["rps"], 1)
        step = run_locust(f"{name}-step-{fraction:g}", kind, hosts, load, args.duration, rate, runs, sampler, group)
        step["fraction"] = fraction
        step.pop("_histogram", None)
        step.pop("by_kind", None)
        result["steps"].append(step)
        say(
            f"    {name:12s} {fraction:4.0%}   {step['rps']:9.1f} req/s (offered {rate})  p50 {step['p50_ms']} ms  "
            f"p99 {step['p99_ms']} ms  errors {step['errors']}"
        )
    if "sink" in target:
        sink = target["sink"]
        result["note"] = f"{target['note']}; the sink took {sink.requests} OTLP exports ({sink.bytes} bytes) so far"
    counters_after = _cache_counters(target)
    if counters_after:
        delta = {k: counters_after[k] - counters_before.get(k, 0) for k in counters_after}
        looked_up = delta.get("hits", 0) + delta.get("misses", 0)
        delta["hit_ratio"] = round(delta.get("hits", 0) / looked_up, 4) if looked_up else None
        result["cache"] = delta
    return result


def warm_up(
    bench: Bench,
    name: str,
    kind: str,
    hosts: list[str],
    load: LoadSettings,
    sampler: CpuSampler,
    wrk_files: dict[str, Path],
    runs: Path,
) -> None:
    """A short unmeasured burst at full concurrency before a target's peak run: lazy imports, JIT-free but
    cold code paths, connection pools and caches settle, so no server pays its start-up inside the figures. Two
    seconds; one in --quick (smoke) mode, whose figures are not read."""
    seconds = 1.0 if bench.args.quick else 2.0
    if not bench.args.no_wrk and not wrk_missing():
        run_wrk(
            f"{name}-warmup",
            hosts,
            wrk_files[kind],
            bench.args.users,
            seconds,
            load.load_cores,
            runs,
            sampler,
            f"server:{name}",
        )
    else:
        run_locust(f"{name}-warmup", kind, hosts, load, 1.0, 0.0, runs, sampler, f"server:{name}")


def _cache_counters(target: dict[str, Any]) -> dict[str, int]:
    totals: dict[str, int] = {}
    for d in target.get("varnish_dirs", []):
        for k, v in cdn.cache_counters(d).items():
            totals[k] = totals.get(k, 0) + v
    return totals


def run(args: argparse.Namespace) -> int:
    started = time.monotonic()
    bench = Bench(args)
    out = args.out
    if (out / "work").exists():
        shutil.rmtree(out / "work")
    if (out / "runs").exists():
        shutil.rmtree(out / "runs")
    bench.work.mkdir(parents=True, exist_ok=True)
    placement = bench.placement
    if placement.load_cores:
        os.sched_setaffinity(0, set(placement.load_cores))  # this harness stays off the server cores
    wanted = args.targets.split(",")
    regions = tuple(r.strip().upper() for r in args.regions.split(",") if r.strip())
    steps = sorted({float(x) for x in args.steps.split(",") if x.strip()} | {0.7})
    if args.quick:
        steps = [0.7]
    locust_processes = args.locust_processes or (len(placement.load_cores) if placement.load_cores else 1)
    machine = machine_info(placement)
    load_avg = machine["load_average_at_start"][0]
    if load_avg > 0.5 * (os.cpu_count() or 1):
        machine["noisy"] = f"load average {load_avg} at start on {os.cpu_count()} CPUs: other work was running"
    try:
        bundle, transactions, data_label = bench.train()
        say("[2/5] starting the origin and edge(s), loading offers")
        offers, _counts = bench.start_edgerec(bundle, transactions, regions)
        edge_url = bench.targets["edgerec"]["hosts"][0]
        contract = bench.probe_contract(edge_url, regions[-1])
        say(f"      edge contract: {contract.to_json()}")
        manifest = json.loads((bundle / "manifest.json").read_text())
        traffic = build_traffic(transactions, regions, manifest["context_length"], args.anonymous_share)
        traffic_path = bench.work / "traffic.json"
        save_traffic(traffic_path, traffic)
        say("[3/5] starting edgerec with impressions off, the ceiling, the peer and the CDN cache")
        variants = (
            ("edgerec_no_events", bench.start_edgerec_no_events, "the edge with impressions off"),
            ("edgerec_traced", bench.start_edgerec_traced, "the traced edge"),
            ("edgerec_access_log", bench.start_edgerec_access_log, "the edge with the access log"),
            ("edgerec_granian", bench.start_edgerec_granian, "the edge on granian"),
        )
        for variant, start_variant, what in variants:
            if variant in wanted:
                try:
                    start_variant(regions)
                except (RuntimeError, OSError, TimeoutError) as exc:
                    bench.targets[variant] = {"skipped": f"{what} did not start: {exc}"}
        typical = bench.typical_answer(edge_url, traffic, contract)
        if "ceiling" in wanted:
            bench.start_ceiling(typical)
        if "ceiling_raw" in wanted:
            bench.start_ceiling(typical, raw=True)
        for name in (n for n in PEERS if n in wanted):
            try:
                bench.start_peer(name, bundle, offers, traffic, contract)
            except (RuntimeError, OSError, TimeoutError) as exc:
                bench.targets[name] = {"skipped": f"the peer did not start: {exc}", "name": peer.PEERS[name].label}
            if "skipped" in bench.targets[name]:
                say(f"      {name} skipped: {bench.targets[name]['skipped']}")
            else:
                say(f"      {name}: {bench.targets[name]['name']}; {bench.targets[name]['parity']}")
        if "edgerec_cdn" in wanted:
            try:
                bench.start_cdn(contract)
            except (RuntimeError, OSError) as exc:
                bench.targets["edgerec_cdn"] = {"skipped": f"Varnish did not start: {exc}"}
        for name in ORDER:
            if name not in wanted:
                bench.targets.setdefault(name, {"skipped": "not in --targets"})
        wrk_files = {
            kind: write_wrk_requests(bench.work / f"wrk-{kind}.tsv", traffic, kind, contract, bench.cdn_secret)
            for kind in set(TARGET_KIND.values())
        }
        load = LoadSettings(
            users=args.users,
            locust_processes=locust_processes,
            warmup_s=args.warmup,
            load_cores=placement.load_cores,
            server_cores=placement.server_cores,
            traffic_path=traffic_path,
            contract=contract,
            cdn_secret=bench.cdn_secret,
        )
        say(
            f"[4/5] measuring: {args.repeat} round(s), {args.duration:g} s per step, {args.users} users, "
            f"{locust_processes} locust process(es), {placement.describe()}"
        )
        rounds: list[dict[str, dict[str, Any]]] = []
        peak_histograms: dict[str, Histogram] = {}
        with CpuSampler() as sampler:
            for name, target in bench.targets.items():
                if "pids" in target:
                    sampler.track(f"server:{name}", target["pids"])
            active = [n for n in ORDER if n in wanted]
            for round_no in range(args.repeat):
                say(f"  round {round_no + 1}/{args.repeat}")
                # Each round starts from a different target, so no target always runs first or last.
                order = active[round_no % len(active) :] + active[: round_no % len(active)] if active else []
                this_round: dict[str, dict[str, Any]] = {}
                for name in order:
                    try:
                        this_round[name] = measure_target(bench, name, round_no, load, sampler, wrk_files, steps)
                    except Exception as exc:  # noqa: BLE001 - one target failing must not lose the others
                        this_round[name] = {"error": f"{type(exc).__name__}: {exc}"}
                        say(f"    {name}: failed: {exc}")
                    hist = (this_round[name].get("peak") or {}).get("_histogram")
                    if hist is not None:
                        peak_histograms.setdefault(name, Histogram()).merge(hist)
                for name in ORDER:
                    this_round.setdefault(name, {"skipped": bench.targets.get(name, {}).get("skipped", "not run")})
                rounds.append(this_round)
        machine["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
        for name in PEERS:
            if "name" in bench.targets.get(name, {}):
                machine["versions"][name] = f"{bench.targets[name]['name']}: {bench.targets[name].get('config')}"
        settings = {
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "users": args.users,
            "repeat": args.repeat,
            "servers": args.servers,
            "locust_processes": locust_processes,
            "steps": steps,
            "quick": args.quick,
            "data": data_label,
            "regions": list(regions),
            "offers_per_region": args.offers_per_region,
            "anonymous_share": args.anonymous_share,
            "k_values": sorted(int(k) for k in traffic["k_weights"]),
            "contract": contract.to_json(),
            "p99_budget_ms": 10.0,
            "trace_sample": args.trace_sample,
        }
        say("[5/5] writing the report")
        command = "python -m benchmarks.latency " + " ".join(shlex.quote(a) for a in (sys.argv[1:] or []))
        report = build_report(machine, settings, rounds, command)
        report["wall_seconds"] = round(time.monotonic() - started, 1)
        written = write_outputs(out, report, peak_histograms)
        print_summary(report)
        for path in written:
            say(f"  wrote {path}")
        return 0
    finally:
        bench.stop_all()


def print_summary(report: dict[str, Any]) -> None:
    say("")
    say(
        f"{'target':14s} {'req/s':>9s} {'wrk req/s':>10s} {'p50':>7s} {'p99':>7s} {'p99.9':>7s} "
        f"{'errors':>7s} {'CPU%':>6s}"
    )
    for name in ORDER:
        t = report["targets"][name]
        if t.get("skipped"):
            say(f"{name:14s} skipped: {t['skipped']}")
            continue
        wrk = (t.get("wrk") or {}).get("rps")
        say(
            f"{name:14s} {t['rps'] or 0:9.1f} {wrk or 0:10.1f} {t['p50_ms'] or 0:7.2f} {t['p99_ms'] or 0:7.2f} "
            f"{t['p999_ms'] or 0:7.2f} {t['errors'] or 0:7d} {t['cpu_percent'] or 0:6.0f}"
        )
    say(f"ratios: {report['ratios']}")
    say(
        f"events on / off throughput: {report['ratios'].get('events_on_vs_off_rps')} "
        f"(the goal: at least {EVENTS_BUDGET})"
    )
    say(f"tracing at a sample / off throughput: {report['ratios'].get('traced_vs_untraced_rps')}")
    if report["peer_wins"]:
        say("the peer wins on: " + "; ".join(report["peer_wins"]))
    hints = []
    if any("varnishd not installed" in str(t.get("skipped")) for t in report["targets"].values()):
        hints.append(cdn.INSTALL_HINT)
    if any("wrk not installed" in str((t.get("wrk") or {}).get("skipped")) for t in report["targets"].values()):
        hints.append("apt-get install -y wrk")
    for hint in hints:
        say(f"missing tool: {hint}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import importlib.util

    missing = [m for m in ("locust", "matplotlib", "psutil") if importlib.util.find_spec(m) is None]
    if missing:
        print(f"missing {', '.join(missing)}: install the bench extra with  pip install -e '.[bench]'", file=sys.stderr)
        return 2
    try:
        if args.profiles:
            from . import profiles_mode

            return profiles_mode.run(args)
        return run(args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
