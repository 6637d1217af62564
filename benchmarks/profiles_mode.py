"""The latency benchmark's profile mode (`python -m benchmarks.latency --out DIR --profiles N`): N shoppers'
profiles at one edge with a catalog of offers, requests carrying only a shopper id against the same shoppers'
events sent as `recent_items`, alternated on the same edge; the edge's RSS; and the time from a posted event to
every replica of the region seeing it.

Profiles reach the edges the product's way: the shoppers' order histories go into the origin through its import
endpoint (the call `edgerec profiles import` makes), the origin folds them into summaries, and each edge loads its
region's summaries from the signed pages of `GET /v1/sync/profiles` before it is ready.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shlex
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import psutil

from edgerec.cli.process import Service, http_call
from edgerec.cli.services import Cluster

from .latency import Bench, machine_info
from .loadgen import run_wrk, wrk_missing
from .options import say
from .processes import CpuSampler, cores
from .profile_breakdown import measure_breakdown
from .profile_propagation import measure_propagation, redis_cleanup
from .profile_report import build, write_profile_report
from .profile_shoppers import catalog_offers, import_rows, real_histories, synthetic_shoppers, write_request_files
from .traffic import regional_offers

REGION = "GB"  # the measured region: the shoppers', the requests' and the replicas'
FILLER_REGION = "DE"  # the rest of the catalog: held by the edge, ranked by no measured request
IMPORT_BATCH = 19_000  # events a call: under the origin's 20,000, so that no shopper is split


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("profile mode (--profiles N)")
    g.add_argument(
        "--profiles",
        type=int,
        default=0,
        help="profile mode: N shoppers' profiles at the edge (100000 for the issue's figure); "
        "hit vs recent_items alternated in --repeat rounds, RSS, replica propagation",
    )
    g.add_argument("--catalog-offers", type=int, default=100_000, help="offers the edge holds (default 100000)")
    g.add_argument("--k", type=int, default=10, help="offers asked for per request in profile mode (default 10)")
    g.add_argument(
        "--propagation-events", type=int, default=200, help="events posted for the propagation p99 (default 200)"
    )
    g.add_argument(
        "--propagation",
        default="redis,origin",
        help="replica paths measured: redis (two replicas sharing the region's Redis), origin (two embedded "
        "replicas, through the origin's summary); comma-separated (default both)",
    )
    g.add_argument(
        "--redis-url",
        default=os.environ.get("EDGEREC_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"),
        help="the region's Redis for the redis replicas (default redis://127.0.0.1:6379/0; keys under a fresh "
        "prefix, deleted at the end)",
    )


def _metric(url: str, name: str) -> float | None:
    status, _, raw = http_call(url, "GET", "/metrics", timeout=10)
    if status != 200:
        return None
    for line in raw.decode(errors="replace").splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return None


def fallback_answers(url: str) -> float:
    """Answers the edge served from a fallback so far (edgerec_fallback_total over its reasons): a slow model run
    opens the breaker for seconds, and those answers skip the model on either path, so each run reports them."""
    status, _, raw = http_call(url, "GET", "/metrics", timeout=10)
    if status != 200:
        return 0.0
    lines = raw.decode(errors="replace").splitlines()
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith("edgerec_fallback_total{"))


def _held(url: str) -> float | None:
    try:
        return _metric(url, "edgerec_profiles_held")
    except OSError:
        return None


def rss_bytes(pid: int) -> int:
    """Resident memory of the process and its children (the edge runs one process with --workers 1)."""
    root = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [root, *root.children(recursive=True)])


def wait_loaded(edges: list[Service], expected: int, timeout_s: float, what: str) -> float:
    """Until every edge is ready (a new edge is ready once its region's profiles are in), with progress lines."""
    started = time.monotonic()
    pending = list(edges)
    last_note = 0.0
    while pending:
        for edge in list(pending):
            if edge.process is not None and edge.process.poll() is not None:
                raise RuntimeError(f"{edge.name} exited ({edge.process.returncode}); see {edge.log_path}")
            try:
                status, _, _ = http_call(edge.url, "GET", "/readyz", timeout=10)
            except OSError:
                status = 0  # not listening yet
            if status == 200:
                pending.remove(edge)
        elapsed = time.monotonic() - started
        if pending and elapsed - last_note >= 10:
            last_note = elapsed
            held = [_held(e.url) for e in pending]
            shown = ", ".join(f"{e.name}: {int(h) if h is not None else '?'}" for e, h in zip(pending, held))
            say(f"      {what}: {elapsed:5.0f} s, profiles held {shown} of {expected}")
        if elapsed > timeout_s:
            raise TimeoutError(f"{what}: not ready after {timeout_s:.0f} s")
        time.sleep(0.5)
    return time.monotonic() - started


class ProfileBench(Bench):
    def load_profiles(self, shoppers: list[Any]) -> dict[str, Any]:
        from edgerec.cli.profiles_admin import batches
        from origin_sync.wire.events import pseudonym_key

        rows = list(import_rows(shoppers, pseudonym_key(self.cluster.pseudonym_key), REGION))
        say(f"      importing {len(rows):,} purchase events of {len(shoppers):,} shoppers into the origin")
        started = time.monotonic()
        done = changed = 0
        next_note = 0.1
        for batch in batches(rows, IMPORT_BATCH):
            answer = self.cluster.admin("POST", "/v1/admin/profiles/import", {"events": batch}, timeout=600)
            done += len(batch)
            changed += answer["profiles_changed"]
            if done / len(rows) >= next_note:
                elapsed = time.monotonic() - started
                say(f"      imported {done:,}/{len(rows):,} events ({done / elapsed:,.0f}/s), {changed:,} profiles")
                next_note += 0.1
        seconds = time.monotonic() - started
        return {"events": len(rows), "profiles_changed": changed, "seconds": round(seconds, 1)}

    def profile_edge(self, label: str, regions: str, store: list[str], env: dict[str, str] | None = None) -> Service:
        edge = self.cluster.edge(regions, args=["--workers", "1", *store], env=env, label=label)
        edge.name = label
        with cores(self.placement.server_cores):
            self.cluster.start_edges(edge, ready=False)
        return edge


def measure_pair(
    bench: ProfileBench, url: str, pid: int, files: dict[str, Path], sampler: CpuSampler, runs: Path
) -> list[dict[str, Any]]:
    """Per round, the two paths back to back (the order alternates between rounds): a closed-loop wrk peak each,
    then each at a fixed rate of 70% of the slower peak (the p99 at the same offered load)."""
    args = bench.args
    load_cores = bench.placement.load_cores
    sampler.track("server:profiles", [pid])
    rounds = []
    for kind in ("hit", "request"):  # warm-up, not measured
        run_wrk(f"warmup-{kind}", [url], files[kind], args.users, 2.0, load_cores, runs, sampler, "server:profiles")

    def measured(name: str, kind: str, rate: float = 0.0) -> dict[str, Any]:
        """A wrk run of one path (closed loop, or at a fixed rate) and the answers sent from the fallback meanwhile."""
        before = fallback_answers(url)
        result = run_wrk(
            name,
            [url],
            files[kind],
            args.users,
            args.duration + args.warmup,
            load_cores,
            runs,
            sampler,
            "server:profiles",
            rate=rate,
        )
        result["fallback_answers"] = fallback_answers(url) - before
        return result

    for round_no in range(args.repeat):
        order = ("hit", "request") if round_no % 2 == 0 else ("request", "hit")
        this: dict[str, Any] = {"order": list(order)}
        for kind in order:
            this[kind] = measured(f"r{round_no}-{kind}-peak", kind)
            say(
                f"    round {round_no + 1} {kind:8s} peak {this[kind]['rps']:8.1f} req/s  p50 {this[kind]['p50_ms']} "
                f"ms  p99 {this[kind]['p99_ms']} ms  errors {this[kind]['errors']}  "
                f"server CPU {this[kind]['cpu_percent']}%  fallback answers {this[kind]['fallback_answers']:.0f}"
            )
        rate = round(0.7 * min(this["hit"]["rps"], this["request"]["rps"]), 1)
        for kind in order:
            fixed = measured(f"r{round_no}-{kind}-70", kind, rate)
            fixed["offered_rps"] = rate
            this[f"{kind}_at_70"] = fixed
            say(
                f"    round {round_no + 1} {kind:8s} at {rate} req/s: p50 {fixed['p50_ms']} ms  p99 {fixed['p99_ms']} "
                f"ms  late sends {fixed['late_sends']}  server CPU {fixed['cpu_percent']}%"
            )
        rounds.append(this)
    sampler.untrack("server:profiles")
    return rounds


def check_answers(url: str, files: dict[str, Path]) -> dict[str, dict[str, int]]:
    """What the edge says each request file's requests are (`"profile"` of 50 answers each): every shopper-id-only
    request must be a hit, every recent_items one a request, or the comparison is not the one it claims."""
    seen: dict[str, dict[str, int]] = {}
    for kind, path in files.items():
        counts: dict[str, int] = {}
        for line in path.read_text().splitlines()[:50]:
            method, route, body = line.split("\t")[:3]
            status, _, raw = http_call(url, method, route, body.encode(), {"Content-Type": "application/json"})
            answer = json.loads(raw).get("profile") if status == 200 else f"HTTP {status}"
            counts[str(answer)] = counts.get(str(answer), 0) + 1
        seen[kind] = counts
    return seen


def _reads_profiles(manifest: dict[str, Any]) -> bool:
    """Whether the model takes the whole history (the hit path then builds it from the profile's summary)."""
    return "profile_items" in json.dumps(manifest)


def run(args: argparse.Namespace) -> int:
    started = time.monotonic()
    bench = ProfileBench(args)
    out = args.out
    for stale in ("work", "runs"):
        if (out / stale).exists():
            shutil.rmtree(out / stale)
    bench.work.mkdir(parents=True, exist_ok=True)
    runs = out / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    if wrk_missing():
        say(f"profile mode needs wrk: {wrk_missing()}")
        return 2
    if bench.placement.load_cores:
        os.sched_setaffinity(0, set(bench.placement.load_cores))
    machine = machine_info(bench.placement)
    paths = [p.strip() for p in args.propagation.split(",") if p.strip()]
    redis_prefix = f"edgerec-bench-{secrets.token_hex(6)}:"
    try:
        from models.data import purchase_events

        bundle, transactions, data_label = bench.train()
        manifest = json.loads((bundle / "manifest.json").read_text())
        known = set(manifest["items"])
        say(f"[2/5] {args.profiles:,} synthetic shoppers from the {REGION} customers of {data_label}")
        events = purchase_events(transactions)
        histories = real_histories(events, REGION, known)
        shoppers = synthetic_shoppers(histories, args.profiles)
        total_events = sum(len(s.events) for s in shoppers)
        say(f"      windows of {len(histories):,} real customers' histories, {total_events:,} events")
        cluster = bench.cluster = Cluster(bench.work, bundle, regions=(REGION, FILLER_REGION))
        with cores(bench.placement.load_cores):
            cluster.origin.start()
        bench.started.append(cluster.stop)
        cluster.origin.wait_ready("/healthz")
        cluster.publish()
        candidates = regional_offers(transactions, events, (REGION,), args.offers_per_region, known)
        offers = catalog_offers(candidates, args.catalog_offers, FILLER_REGION, sorted(known))
        t0 = time.monotonic()
        cluster.put_offers(offers)
        seconds = time.monotonic() - t0
        say(f"      {len(offers):,} offers at the origin ({len(candidates)} in {REGION}), {seconds:.1f} s")
        loaded = bench.load_profiles(shoppers)
        say(f"      origin import: {loaded['seconds']} s, {loaded['profiles_changed']:,} summaries")

        say("[3/5] starting the edge (embedded store) and the replicas; each loads its region's summaries")
        edge = bench.profile_edge("edge-profiles", f"{REGION},{FILLER_REGION}", ["--profile-store", "embedded"])
        replicas: dict[str, list[Service]] = {}
        if "origin" in paths:
            # The measured edge is one embedded replica of the region; a second one learns its events from the origin.
            replicas["origin"] = [edge, bench.profile_edge("edge-origin-b", REGION, ["--profile-store", "embedded"])]
        if "redis" in paths:
            env = {"EDGEREC_PROFILE_REDIS_URL": args.redis_url}
            store = ["--profile-store", "redis", "--profile-redis-prefix", redis_prefix]
            replicas["redis"] = [bench.profile_edge(f"edge-redis-{n}", REGION, store, env) for n in ("a", "b")]
        all_edges = [edge, *{id(e): e for group in replicas.values() for e in group if e is not edge}.values()]
        load_s = wait_loaded(all_edges, len(shoppers), 3600, "loading the summaries")
        cluster.wait_for_version(0, timeout_s=60)
        held = _metric(edge.url, "edgerec_profiles_held")
        say(f"      all ready in {load_s:.1f} s; the edge holds {held and int(held):,} profiles in memory")
        loaded["edges_ready_s"] = round(load_s, 1)
        baseline = bench.profile_edge("edge-no-profiles", f"{REGION},{FILLER_REGION}", ["--profile-store", "off"])
        wait_loaded([baseline], 0, 300, "the edge without profiles")

        say("[4/5] measuring")
        files = write_request_files(shoppers, REGION, args.k, bench.work)
        answers = check_answers(edge.url, files)
        say(f"      answers' profile field, 50 of each: {answers}")
        rss_loaded = rss_bytes(edge.pid)
        with CpuSampler() as sampler:
            rounds = measure_pair(bench, edge.url, edge.pid, files, sampler, runs)
            run_wrk(
                "baseline-warmup",
                [baseline.url],
                files["request"],
                args.users,
                2.0,
                bench.placement.load_cores,
                runs,
                sampler,
                "server:baseline",
            )
        memory = {
            "rss_loaded_bytes": rss_loaded,
            "rss_after_load_test_bytes": rss_bytes(edge.pid),
            "rss_without_profiles_bytes": rss_bytes(baseline.pid),
            "profiles_held": _metric(edge.url, "edgerec_profiles_held"),
            "profiles_accounted_bytes": _metric(edge.url, "edgerec_profiles_bytes"),
            "profiles_budget_bytes": _metric(edge.url, "edgerec_profiles_budget_bytes"),
        }
        say(
            f"      RSS {memory['rss_after_load_test_bytes'] / 2**20:.1f} MiB with the profiles, "
            f"{memory['rss_without_profiles_bytes'] / 2**20:.1f} MiB without"
        )
        say("      where a hit's cost goes, step by step in this process")
        breakdown = measure_breakdown(bundle, shoppers, files)
        say(f"      hit {breakdown['hit_us']} us; recent_items {breakdown['request_us']} us")
        propagation = {}
        for path in paths:
            say(f"      propagation over {path}: {args.propagation_events} events")
            propagation[path] = measure_propagation(
                replicas[path], REGION, args.propagation_events, pace_s=0.0 if path == "redis" else 0.2
            )
            say(
                f"      {path}: p50 {propagation[path]['p50_ms']} ms, p99 {propagation[path]['p99_ms']} ms, "
                f"unseen {propagation[path]['unseen']}"
            )
        settings = {
            "profiles": args.profiles,
            "catalog_offers": len(offers),
            "candidates_per_request": len(candidates),
            "region": REGION,
            "filler_region": FILLER_REGION,
            "k": args.k,
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "connections": args.users,
            "repeat": args.repeat,
            "data": data_label,
            "events_per_shopper_mean": round(sum(len(s.events) for s in shoppers) / len(shoppers), 2),
            "load_path": "origin import endpoint (what `edgerec profiles import` calls), then each edge's start-up "
            "load of the signed GET /v1/sync/profiles pages",
            "propagation_events": args.propagation_events,
            "answers_checked": answers,
            "model_reads_profiles": _reads_profiles(manifest),
        }
        machine["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
        command = "python -m benchmarks.latency " + " ".join(shlex.quote(a) for a in (sys.argv[1:] or []))
        say("[5/5] writing the report")
        wall_s = time.monotonic() - started
        report = build(machine, settings, loaded, rounds, memory, propagation, breakdown, command, wall_s)
        written = write_profile_report(out, report, rounds)
        for line in report["summary"]:
            say("  " + line)
        for p in written:
            say(f"  wrote {p}")
        return 0
    finally:
        bench.stop_all()
        if "redis" in paths:
            redis_cleanup(args.redis_url, redis_prefix)
