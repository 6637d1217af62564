"""Simulation of the learning loop: the real pipeline (edgerec.cli.pipeline) for three monthly rounds against a real
origin and two regional edge processes, with real Online Retail shoppers as each round's experiment traffic.

    python -m benchmarks.loop --out DIR [--quick] [--data auto|synthetic|PATH] [--first-month 2011-08]

Before the first round a stale model (trained on the history before --stale-cut, default 2011-03-01) is the active
one. Round r trains its candidate on the shop's order history before month r (the pipeline's `orders`), passes the
offline gate and ONNX parity, is published as a candidate and goes through the pipeline's experiment stages, while the
customers of month r who have history shop through the edges as in benchmarks.experiment (one personalized answer;
a click and a purchase for each offered item they really bought that month). The pipeline looks at the origin's
report after every batch of shoppers and promotes, stops, moves to its next stage or waits; a round still undecided
when the month's shoppers are all served is ended by hand (the served model kept). Round 2's candidate is made bad
on purpose (its feature weights shuffled, the offline gate opened for it) to show the experiment's guardrails stop
it at its first stage's share. The A/A part runs in process (benchmarks.loop_aa), on the origin's statistics code.
Writes DIR/report.json, DIR/report.md, DIR/loop_metric.png and DIR/loop_aa.png.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import dataclasses
import json
import os
import shutil
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from edgerec.cli.pipeline import Pipeline, stop_by_hand
from edgerec.cli.pipeline_rules import CANDIDATE, CONTROL, Policy
from edgerec.cli.process import Service
from edgerec.cli.services import Cluster
from models.evaluate import split_by_date

from .experiment import (
    Sent,
    Shopper,
    build_shoppers,
    pick_regions,
    region_offers,
    shop,
    split_data,
    stored,
    train_models,
    wait_drained,
)
from .loop_aa import aa_study
from .options import benchmark_parser, interruptible
from .traffic import resolve_data

ROUNDS = 3
BAD_ROUND = 2  # 1-based: the round whose candidate has its weights shuffled
K = 10
STOPPED = ("loss", "guardrail", "not_enough_data")  # the pipeline's outcomes that stop a candidate on its evidence


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = benchmark_parser("loop", __doc__, "report.json, report.md and the PNGs")
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke mode: 3 months of history, at most 120 shoppers a month, 300 offers a region, 100 A/A runs",
    )
    p.add_argument(
        "--data", default="auto", help="auto (the shared Online Retail data when present), synthetic, or a CSV"
    )
    p.add_argument(
        "--first-month",
        default="2011-08",
        help="the first round's traffic month (default 2011-08; the shared data ends with October 2011)",
    )
    p.add_argument(
        "--stale-cut",
        help="the stale model's history ends here (default 2011-03-01; --quick: 2 months before the first)",
    )
    p.add_argument("--regions", default="GB,auto", help="two regions, as in benchmarks.experiment (default GB,auto)")
    p.add_argument("--aa-runs", type=int, default=0, help="A/A runs (default 2000, --quick 100)")
    p.add_argument(
        "--tuning-n",
        type=int,
        default=0,
        help="the origin's EDGEREC_SEQUENTIAL_TUNING_N (default 200, --quick 40: about a stage's traffic here)",
    )
    p.add_argument("--concurrency", type=int, default=4, help="shoppers in flight at once (default 4)")
    p.add_argument(
        "--model-budget-ms",
        type=float,
        default=250.0,
        help="the edges' EDGEREC_MODEL_BUDGET_MS (default 250: this shared 2-core machine overruns the default 25 ms "
        "under the simulation's load, and the breaker's fallbacks are not what this benchmark measures)",
    )
    p.add_argument("--keep-work", action="store_true", help="keep DIR/work (logs, databases, bundles)")
    args = p.parse_args(argv)
    args.aa_runs = args.aa_runs or (100 if args.quick else 2000)
    args.tuning_n = args.tuning_n or (40 if args.quick else 200)
    return args


def policy_for(quick: bool, *, gate_margin: float = 0.01) -> Policy:
    """The pipeline's thresholds, sized to a month of one shop's shoppers (the defaults are sized for far more)."""
    if quick:
        return Policy(
            gate_margin=gate_margin,
            stages=(0.2, 0.5),
            min_impressions=15,
            stage_impressions=40,
            max_stage_s=1e9,
            min_health_answers=15,
        )
    return Policy(
        gate_margin=gate_margin, stages=(0.2, 0.5), min_impressions=50, stage_impressions=100, max_stage_s=1e9
    )


def month_bounds(first: str, rounds: int) -> list[tuple[str, str, int]]:
    """(first day, first day of the next month, days) of `rounds` consecutive months from YYYY-MM."""
    start = np.datetime64(first, "M")
    months = []
    for n in range(rounds):
        begin, end = start + n, start + n + 1
        days = int((end.astype("datetime64[D]") - begin.astype("datetime64[D]")).astype(int))
        months.append((str(begin.astype("datetime64[D]")), str(end.astype("datetime64[D]")), days))
    return months


@dataclasses.dataclass
class Month:
    cut: str
    end: str
    history_path: Path  # the order history before the month: what the round's candidate trains on
    shoppers: list[Shopper]
    offers: list[dict[str, Any]]


def prepare_month(
    data: Path, cut: str, days: int, work: Path, regions: tuple[str, ...] | str, context_length: int, quick: bool
) -> tuple[Month, tuple[str, ...]]:
    from models.data import item_catalog

    work.mkdir(parents=True, exist_ok=True)
    history, test, history_path, end = split_data(data, cut, days, work)
    chosen = pick_regions(regions, test, history) if isinstance(regions, str) else regions
    known = set(item_catalog(history))
    by_region = build_shoppers(history, test, chosen, cut, context_length, known)
    shoppers = [s for r in chosen for s in by_region[r]]
    np.random.default_rng(int(cut.replace("-", ""))).shuffle(shoppers)  # arrival order: the regions mixed
    if quick:
        shoppers = shoppers[:120]
    offers = region_offers(history, chosen, known, 300 if quick else 0)
    return Month(cut, end, history_path, shoppers, offers), chosen


def train_stale(data: Path, cut: str, work: Path) -> tuple[Path, dict[str, Any]]:
    """The model active before the first round, the shop's launch ranker: benchmarks.experiment's popularity bundle
    (every weight zero but the region's purchase share) of the history before `cut` only."""
    from models.evaluate import split_by_date

    history_path = work / "stale-history.csv"
    split_by_date(data, cut, history_path, work / "stale-rest.csv")
    _, popularity_dir, info = train_models(history_path, work / "stale", quick=True)
    return popularity_dir, {**info, "version": info["popularity"]}


def negated_weights(trained: Any) -> Any:
    """The pipeline's `adjust` for the bad candidate: the trained ranker with its feature weights negated (it ranks
    first what the shopper is least likely to buy), everything else as trained, so its golden outputs and ONNX parity
    still hold. (Shuffling the weights is not bad enough here: the repeat signal is spread over several features.)"""
    from models.features import FEATURE_NAMES
    from models.train import TrainedRanker

    negated = -np.asarray(trained.model.weights)
    report = {
        **trained.report,
        "feature_weights": dict(zip(FEATURE_NAMES, negated.tolist())),
        "variant": "bad on purpose: feature weights negated (benchmarks/loop.py)",
    }
    model = dataclasses.replace(trained.model, weights=negated)
    return TrainedRanker(model, trained.held_out, report, trained.default_ages)


def serve(edges: dict[str, Service], shoppers: list[Shopper], concurrency: int) -> tuple[Sent, list[str]]:
    """The shoppers' visits through the edges; an answer other than 200 or refused events count as errors."""
    sent, errors = Sent(), []
    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        futures = [pool.submit(shop, edges[s.region], s, K, sent) for s in shoppers]
        for future in concurrent.futures.as_completed(futures):
            try:
                future.result()
            except Exception as exc:  # noqa: BLE001 - a shopper's error is the benchmark's finding, not its end
                errors.append(str(exc)[:300])
    return sent, errors


@dataclasses.dataclass
class Loop:
    """The running simulation: the cluster, its edges, and every event and error so far."""

    cluster: Cluster
    edges: dict[str, Service]
    concurrency: int
    batch: int
    events_before: int
    events_sent: int = 0
    errors: list[str] = dataclasses.field(default_factory=list)
    timeline: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    def sync_edges(self) -> None:
        self.cluster.wait_for_version(self.cluster.admin("GET", "/v1/admin/status")["data_version"], timeout_s=60)

    def report(self, experiment: str) -> dict[str, Any]:
        return self.cluster.admin("GET", f"/v1/admin/experiments/{experiment}/report")

    def run_round(self, number: int, pipeline: Pipeline, month: Month) -> dict[str, Any]:
        t = time.monotonic()
        self.cluster.put_offers(month.offers)
        log(f"[round {number}] {month.cut}: training on the orders before it, gate, parity, publish")
        pipeline.open_round()
        step = pipeline.advance()
        round_ = pipeline.state["round"]
        trained_s = round(time.monotonic() - t, 1)
        log(f"      candidate {round_.get('candidate')} against {round_.get('served')}: {step} ({trained_s} s)")
        served = 0
        stages: list[str] = []
        while step != "done" and served < len(month.shoppers):
            experiment = round_["experiment"]
            if experiment not in stages:
                stages.append(experiment)
                self.sync_edges()  # the edges serve the stage's split before its shoppers come
            batch = month.shoppers[served : served + self.batch]
            sent, errors = serve(self.edges, batch, self.concurrency)
            served += len(batch)
            self.events_sent += sent.total
            self.errors += errors
            wait_drained(self.cluster, self.events_before + self.events_sent, timeout_s=60, settle_s=0.0)
            figures = stage_figures(self.report(experiment))
            known = len(round_["decisions"])
            step = pipeline.advance()
            made = [d for d in round_["decisions"][known:] if d["step"] == "watch"]
            point = {
                "round": number,
                "stage": int(experiment.rsplit("-s", 1)[1]),
                "experiment": experiment,
                "shoppers": served,
                "answers": dict(sent.by_variant),
                **figures,
                "decision": made[0]["decision"] if made else "wait",
            }
            self.timeline.append(point)
            log(
                f"      {served}/{len(month.shoppers)} shoppers, stage {point['stage']}: conversion served "
                f"{fmt(figures['conversion'][CONTROL])} candidate {fmt(figures['conversion'][CANDIDATE])}, "
                f"p {fmt(figures['p_value'])}: {point['decision']}"
            )
        if step != "done":
            stop_by_hand(pipeline, "the month's shoppers were all served without a decision: the served model is kept")
            log("      month over, no decision: the served model is kept")
        return self.summary(number, pipeline, month, stages, served, time.monotonic() - t, trained_s)

    def summary(
        self, number: int, pipeline: Pipeline, month: Month, stages: list[str], served: int, wall: float, trained: float
    ) -> dict[str, Any]:
        round_ = pipeline.state["round"]
        outcome = round_["outcome"]
        decision = "promoted" if outcome == "promoted" else "stopped" if outcome in STOPPED else "kept"
        definitions = {e["id"]: e for e in self.cluster.admin("GET", "/v1/admin/experiments")["experiments"]}
        totals = {v: {"impressions": 0, "conversions": 0} for v in (CONTROL, CANDIDATE)}
        shares, sample_ratio = [], {}
        for experiment in stages:
            stage_report = self.report(experiment)
            variants = stage_report["variants"]
            sample_ratio[experiment] = stage_report["sample_ratio"]
            for v in totals:
                totals[v]["impressions"] += variants[v]["impressions"]
                totals[v]["conversions"] += variants[v]["conversions"]
            weights = {x["name"]: x["weight"] for x in definitions[experiment]["variants"]}
            shares.append(weights[CANDIDATE] / sum(weights.values()))
        rates = {v: (t["conversions"] / t["impressions"] if t["impressions"] else None) for v, t in totals.items()}
        uplift = rates[CANDIDATE] / rates[CONTROL] - 1 if rates[CANDIDATE] is not None and rates[CONTROL] else None
        all_impressions = sum(t["impressions"] for t in totals.values())
        gate = next((d for d in round_["decisions"] if d["step"] == "gate"), None)
        week = {}
        report_path = pipeline.round_dir / "candidate" / "training_report.json"
        if report_path.is_file():
            models = json.loads(report_path.read_text())["held_out_week"].get("models", {})
            week = {name: m["ndcg@10"] for name, m in models.items()}
        return {
            "round": number,
            "month": month.cut[:7],
            "trained_on_orders_before": month.cut,
            "candidate": round_.get("candidate"),
            "served": round_.get("served"),
            "decision": decision,
            "outcome": outcome,
            "reason": next(
                (d["reason"] for d in reversed(round_["decisions"]) if d["step"] == "watch" and d["reason"]),
                round_["decisions"][-1]["reason"] if round_["decisions"] else outcome,
            ),
            "uplift": uplift,
            "conversion": rates,
            "impressions": {v: t["impressions"] for v, t in totals.items()},
            "conversions": {v: t["conversions"] for v, t in totals.items()},
            "stages_reached": len(stages),
            "experiments": stages,
            "max_traffic_share": max(shares, default=0.0),
            "served_share": totals[CANDIDATE]["impressions"] / all_impressions if all_impressions else None,
            "sample_ratio": sample_ratio,  # the origin's check of each stage's split against its weights
            "shoppers": {"month": len(month.shoppers), "served_while_deciding": served},
            "offline_gate": {"decision": gate["decision"] if gate else None, "held_out_week_ndcg@10": week},
            "policy": round_["policy"],
            "decisions": [(d["step"], d["decision"]) for d in round_["decisions"]],
            "seconds": {"round": round(wall, 1), "train_to_experiment": trained},
        }


def stage_figures(report: dict[str, Any]) -> dict[str, Any]:
    """What a look at a stage's report shows: per variant impressions and conversion, the sequential p-value."""
    variants = report["variants"]
    tests = variants[CANDIDATE]["vs_control"]["sequential"]
    test = tests["conversion_cuped"] or tests["conversion"]
    return {
        "impressions": {v: variants[v]["impressions"] for v in (CONTROL, CANDIDATE)},
        "conversion": {v: variants[v]["conversion"]["rate"] for v in (CONTROL, CANDIDATE)},
        "p_value": test["p_value"],
        "fixed_horizon_p_value": variants[CANDIDATE]["vs_control"]["conversion"]["p_value"],
    }


def fmt(value: Any, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def empty_event_sink(path: Path) -> Path:
    """The SQL sink the pipeline reads the shop's events from: empty, so candidates learn from the order history only
    (the simulated traffic's events carry the run's wall-clock times, not the data's)."""
    from origin_sync.origin.sinks.sql import SQLiteEventSink

    asyncio.run(SQLiteEventSink(path).close())
    return path


def run(args: argparse.Namespace) -> int:
    wall = time.monotonic()
    out: Path = args.out
    work = out / "work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    data, label = resolve_data(args.data)
    note = None
    if data is None:
        from models.synthetic import write_synthetic_transactions

        data = write_synthetic_transactions(work / "transactions.csv.gz", seed=7)
        note = "SYNTHETIC data (models.synthetic), not real shoppers"
        log(f"NOTE: {note}")
    first = np.datetime64(args.first_month, "M")
    stale_cut = args.stale_cut or (str((first - 1).astype("datetime64[D]")) if args.quick else "2011-03-01")
    if args.quick:  # a shorter history: the data from 3 months before the first round on
        window = str((first - 3).astype("datetime64[D]"))
        split_by_date(data, window, work / "before-window.csv", work / "window.csv")
        data, label = work / "window.csv", f"{label}, from {window} on (--quick)"
    log(f"[setup] the stale model: trained on {label} before {stale_cut} ({time.monotonic() - wall:.1f} s)")
    stale_dir, stale = train_stale(data, stale_cut, work)
    log(f"      {stale['version']} ({time.monotonic() - wall:.1f} s)")
    months, regions = [], args.regions
    for n, (cut, _, days) in enumerate(month_bounds(args.first_month, ROUNDS), start=1):
        month, regions = prepare_month(
            data, cut, days, work / f"month-{n}", regions, stale["context_length"], args.quick
        )
        if not month.shoppers:
            raise SystemExit(f"month {cut[:7]}: no shoppers with history and purchases in {label}; see --first-month")
        months.append(month)
        log(
            f"      month {cut[:7]}: {len(month.shoppers)} shoppers, {len(month.offers)} offers "
            f"({time.monotonic() - wall:.1f} s)"
        )

    cluster = Cluster(work / "cluster", regions=regions, origin_env={"EDGEREC_SEQUENTIAL_TUNING_N": str(args.tuning_n)})
    rounds = []
    try:
        cluster.start_origin()
        cluster.publish(stale_dir)
        os.environ["EDGEREC_ADMIN_TOKEN"] = cluster.admin_token  # the pipeline's admin calls
        os.environ["EDGEREC_PSEUDONYM_KEY"] = cluster.pseudonym_key  # the orders' customers as the edges name them
        cluster.put_offers(months[0].offers)
        log(f"[setup] origin up, stale model {stale['version']} active; one edge per region ({', '.join(regions)})")
        budget = {"EDGEREC_MODEL_BUDGET_MS": str(args.model_budget_ms)}
        edges = dict(zip(regions, cluster.start_edges(*(cluster.edge(r, env=budget) for r in regions), timeout_s=60)))
        before = stored(cluster, "SELECT COUNT(*) FROM events")
        loop = Loop(cluster, edges, args.concurrency, 20 if args.quick else 50, before[0][0] if before else 0)
        events = empty_event_sink(work / "shop-events.db")
        for n, month in enumerate(months, start=1):
            is_bad = n == BAD_ROUND
            pipeline = Pipeline(
                cluster.origin.url,
                work / "pipeline",
                name="loop",
                policy=policy_for(args.quick, gate_margin=1.0 if is_bad else 0.01),
                events=str(events),
                orders=month.history_path,
                progress=False,
                adjust=negated_weights if is_bad else None,
            )
            while pipeline.state.get("last_round_started", 0.0) >= time.time() - 1.0:
                time.sleep(0.2)  # round ids are whole seconds
            rounds.append({**loop.run_round(n, pipeline, month), "bad_candidate": is_bad})
        drained, _ = wait_drained(cluster, loop.events_before + loop.events_sent, timeout_s=60, settle_s=1.0)
    finally:
        cluster.stop()

    log(f"[A/A] {args.aa_runs} runs in process")
    served_rates = [r["conversion"][CONTROL] for r in rounds if r["conversion"][CONTROL] is not None]
    looks = max(1, max(r["shoppers"]["month"] for r in rounds) // loop.batch)
    rate = float(np.mean(served_rates or [0.5]))
    aa = aa_study(policy_for(args.quick), args.aa_runs, looks, loop.batch, rate, args.tuning_n)
    bad = rounds[BAD_ROUND - 1]
    report: dict[str, Any] = {
        "rounds": rounds,
        "bad_candidate": {
            "round": BAD_ROUND,
            "candidate": bad["candidate"],
            "decision": bad["decision"],
            "outcome": bad["outcome"],
            "reason": bad["reason"],
            "max_traffic_share": bad["max_traffic_share"],
            "stage_share": bad["policy"]["stages"][0],
            "served_share": bad["served_share"],
            "sample_ratio": bad["sample_ratio"],
            "impressions": bad["impressions"],
            "conversion": bad["conversion"],
            "offline_gate": {**bad["offline_gate"], "margin_opened_to": 1.0, "default_margin": 0.01},
        },
        "aa": aa,
        "errors": len(loop.errors),
        "error_samples": loop.errors[:10],
        "events": {"sent": loop.events_sent, "at_origin": drained - loop.events_before},
        "timeline": loop.timeline,
        "stale_model": {
            "version": stale["version"],
            "history_before": stale_cut,
            "kind": "popularity: every feature weight zero but region_popularity (benchmarks.experiment's control)",
        },
        "settings": {
            "data": label,
            "note": note,
            "regions": list(regions),
            "months": [m.cut[:7] for m in months],
            "quick": args.quick,
            "batch": loop.batch,
            "k": K,
            "concurrency": args.concurrency,
            "edge_model_budget_ms": args.model_budget_ms,
            "sequential_tuning_n": args.tuning_n,
        },
        "machine": {
            "logical_cpus": os.cpu_count(),
            "python": sys.version.split()[0],
            "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        },
        "command": "python -m benchmarks.loop " + " ".join(sys.argv[1:]),
    }
    from .loop_report import plot_aa, plot_metric, render_markdown

    plot_metric(report, out / "loop_metric.png")
    plot_aa(report["aa"], out / "loop_aa.png")
    report["wall_seconds"] = round(time.monotonic() - wall, 1)
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str))
    (out / "report.md").write_text(render_markdown(report))
    if not args.keep_work:
        shutil.rmtree(work, ignore_errors=True)
    for r in rounds:
        log(f"  round {r['round']} ({r['month']}): {r['decision']} ({r['outcome']}), uplift {fmt(r['uplift'])}")
    log(
        f"  errors {report['errors']}; A/A sequential {aa['false_winner_rate_sequential']:.3f}, fixed peeking "
        f"{aa['false_winner_rate_fixed_peeking']:.3f}; {report['wall_seconds']} s; wrote {out / 'report.json'}"
    )
    return 0 if report["errors"] == 0 else 1


def main(argv: list[str] | None = None) -> int:
    return interruptible(run, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
