"""Simulation benchmark of an A/B experiment: real-data shoppers through real edges, events to the origin's report.

    python -m benchmarks.experiment --out DIR [--shoppers N] [--quick] [--data auto|synthetic|PATH]

The shared Online Retail data is split by date (history before --cut, default 2011-09-01; test the next
--test-days, default 61: Sep–Oct). Two models are trained on the history only and published to a real origin:
`model` (the trained ranker) and `popularity` (the same bundle format and statistics with every feature weight
zeroed but `region_popularity`: it ranks offers by the region's purchase share and ignores the shopper's context,
although the edge sends it). An experiment (control popularity, treatment model, 50/50) covers two regions, each
served by its own edge process. Every customer of those regions with history and test-period purchases becomes a
shopper: one personalized POST with an opaque id and their last L purchase events before the cut (with ages), then
for every offered item they really bought in the test period a click and a purchase (value = their spend on it)
to POST /v1/events with the answer's request_id. Events travel through the edges' spools to the origin; once the
counts are stable the origin's report is fetched and the event store checked for lost and duplicated events.
Writes DIR/report.json, DIR/report.md and DIR/experiment.png.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import hashlib
import json
import os
import shutil
import sqlite3
import sys
import threading
import time
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from edgerec.cli.process import Service, http_call
from edgerec.cli.services import Cluster

from .options import add_data_option, benchmark_parser, interruptible, say
from .traffic import resolve_data

EXPERIMENT_ID = "sim-model-vs-popularity"
CURRENCY = {"GB": ("GBP", 1.0)}  # every other region is priced in EUR at this rate from the data's GBP
EUR_PER_GBP = 1.17
K = 10


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = benchmark_parser("experiment", __doc__, "report.json, report.md and the PNG")
    p.add_argument("--shoppers", type=int, default=0, help="at most this many shoppers (default: all of them)")
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke mode: 2 training cuts, at most 300 shoppers and 400 offers per region (about 1 min)",
    )
    add_data_option(p)
    p.add_argument("--cut", default="2011-09-01", help="history before this date, test from it (default 2011-09-01)")
    p.add_argument("--test-days", type=int, default=61, help="days of the test period (default 61: Sep–Oct)")
    p.add_argument(
        "--regions",
        default="GB,auto",
        help="two regions; 'auto' picks the one with most test shoppers among DE, FR, IE (default GB,auto)",
    )
    p.add_argument("--k", type=int, default=K, help=f"offers per answer (default {K})")
    p.add_argument("--concurrency", type=int, default=8, help="shoppers in flight at once (default 8)")
    p.add_argument("--keep-work", action="store_true", help="keep DIR/work (logs, databases) after the run")
    args = p.parse_args(argv)
    if args.shoppers < 0 or args.k < 1 or args.concurrency < 1 or args.test_days < 1:
        p.error("--shoppers, --k, --concurrency and --test-days must be positive")
    return args


# ---------------------------------------------------------------- data and models


def split_data(data: Path, cut: str, test_days: int, work: Path) -> tuple[Any, Any, Path, str]:
    """History (rows before the cut) as a CSV for training, and the test period's transactions."""
    from models.data import read_transactions
    from models.evaluate import split_by_date

    history_path, rest_path = work / "history.csv.gz", work / "rest.csv.gz"
    n_hist, n_rest = split_by_date(data, cut, history_path, rest_path)
    history = read_transactions(history_path)
    rest = read_transactions(rest_path)
    start = np.datetime64(cut, "s")
    end = start + np.timedelta64(test_days, "D")
    test = rest.select(rest.invoiced_at < end)
    say(
        f"      {n_hist} history rows before {cut}, {len(test)} test rows until {str(end)[:10]} "
        f"({n_rest - len(test)} later rows unused)"
    )
    return history, test, history_path, str(end)[:10]


def train_models(history_path: Path, work: Path, quick: bool) -> tuple[Path, Path, dict[str, Any]]:
    """The trained ranker and the popularity ranker, both as bundles trained on the history only."""
    from models.data import read_transactions
    from models.features import FEATURE_NAMES
    from models.train import (
        TrainedRanker,
        TrainingConfig,
        fit_ranking_model,
        write_trained_bundle,
    )

    config = TrainingConfig(training_cuts=2) if quick else TrainingConfig()
    trained = fit_ranking_model(read_transactions(history_path), config, data_name=history_path.name)
    model_dir, popularity_dir = work / "bundle-model", work / "bundle-popularity"
    model_manifest = write_trained_bundle(trained, model_dir, config)
    # Popularity: the same statistics and graph, every weight zero but region_popularity (the region's log share
    # of purchases), no bias: the score of an offer is its regional popularity whatever the context says.
    weights = np.zeros(len(FEATURE_NAMES))
    weights[FEATURE_NAMES.index("region_popularity")] = 1.0
    popular = dataclasses.replace(trained.model, weights=weights, bias=0.0)
    report = {
        **trained.report,
        "feature_weights": dict(zip(FEATURE_NAMES, weights.tolist())),
        "bias": 0.0,
        "variant": "popularity: only region_popularity weighted (benchmarks/experiment.py)",
    }
    popularity_manifest = write_trained_bundle(
        TrainedRanker(popular, trained.held_out, report, trained.default_ages), popularity_dir, config
    )
    info = {
        "model": model_manifest["version"],
        "popularity": popularity_manifest["version"],
        "context_length": model_manifest["context_length"],
        "items": model_manifest["items"],
        "training_seconds": trained.report["seconds"],
        "held_out_metrics": trained.report["metrics"],
        "training_cuts": config.training_cuts,
    }
    return model_dir, popularity_dir, info


def region_offers(history: Any, regions: tuple[str, ...], known: set[str], per_region: int) -> list[dict[str, Any]]:
    """Every item the model knows that sold in a region during the history, as an offer there (the best sellers
    first when capped at per_region)."""
    from models.data import item_catalog, purchase_events

    catalog = item_catalog(history)
    events = purchase_events(history)
    offers = []
    for region in regions:
        counts: dict[str, int] = defaultdict(int)
        for code in events.stock_code[events.region == region].tolist():
            counts[code] += 1
        codes = [c for c, item in catalog.items() if region in item.regions and c in known and item.unit_price > 0]
        codes.sort(key=lambda c: (-counts.get(c, 0), c))
        if per_region:
            codes = codes[:per_region]
        currency, rate = CURRENCY.get(region, ("EUR", EUR_PER_GBP))
        for code in codes:
            item = catalog[code]
            offers.append(
                {
                    "id": f"{region}-{code}",
                    "sku": code,
                    "title": (item.description or code)[:300],
                    "price": round(item.unit_price * rate, 2),
                    "currency": currency,
                    "regions": [region],
                    "stock": 1000,
                }
            )
    return offers


@dataclasses.dataclass
class Shopper:
    shopper_id: str
    region: str
    recent_items: list[dict[str, Any]]
    bought: dict[str, float]  # sku -> spend in the test period (in the region's currency)


def build_shoppers(
    history: Any, test: Any, regions: tuple[str, ...], cut: str, context_length: int, known: set[str]
) -> dict[str, list[Shopper]]:
    """Per region, the customers with purchase events before the cut and purchases in the test period."""
    from models.data import clean_purchases, purchase_events

    cut_time = np.datetime64(cut, "s")
    events = purchase_events(history)
    past: dict[int, list[tuple[str, float]]] = defaultdict(list)
    ages = (cut_time - events.invoiced_at) / np.timedelta64(1, "D")
    for cid, code, age in zip(events.customer_id.tolist(), events.stock_code.tolist(), ages.tolist()):
        if code in known:
            past[cid].append((code, round(float(age), 3)))  # sorted by time within a customer: most recent last
    bought = clean_purchases(test, require_customer=True)
    spend: dict[tuple[int, str], dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for cid, region, code, qty, price in zip(
        bought.customer_id.tolist(),
        bought.region.tolist(),
        bought.stock_code.tolist(),
        bought.quantity.tolist(),
        bought.unit_price.tolist(),
    ):
        if region in regions:
            spend[(cid, region)][code] += qty * price
    shoppers: dict[str, list[Shopper]] = {r: [] for r in regions}
    for (cid, region), items in sorted(spend.items()):
        if not past.get(cid):
            continue
        rate = CURRENCY.get(region, ("EUR", EUR_PER_GBP))[1]
        opaque = "s-" + hashlib.sha256(f"edgerec-sim:{cid}".encode()).hexdigest()[:16]
        context = [{"item": code, "age_days": age} for code, age in past[cid][-context_length:]]
        shoppers[region].append(
            Shopper(opaque, region, context, {code: round(v * rate, 2) for code, v in items.items() if v > 0})
        )
    return shoppers


def pick_regions(choice: str, test: Any, history: Any) -> tuple[str, ...]:
    wanted = [r.strip().upper() for r in choice.split(",") if r.strip()]
    if len(wanted) != 2:
        raise SystemExit("--regions: give two regions")
    if "AUTO" in wanted:
        from models.data import purchase_events

        past = set(purchase_events(history).customer_id.tolist())
        counts = {}
        for region in ("DE", "FR", "IE"):
            ids = set(test.customer_id[(test.region == region) & (test.quantity > 0)].tolist())
            counts[region] = len(ids & past)
        best = max(counts, key=lambda r: (counts[r], r == "DE"))
        wanted[wanted.index("AUTO")] = best
        say(f"      second region: {best} (test shoppers with history: {counts})")
    return tuple(wanted)


# ---------------------------------------------------------------- the run


def stored(cluster: Cluster, sql: str) -> Any:
    """A read-only query of the origin's SQLite event store (nothing before its first event)."""
    path = cluster.workdir / "origin" / "events.db"
    if not path.exists():
        return []
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10) as db:
        return db.execute(sql).fetchall()


@dataclasses.dataclass
class Sent:
    impressions: int = 0
    clicks: int = 0
    purchases: int = 0
    by_variant: dict[str, int] = dataclasses.field(default_factory=lambda: defaultdict(int))
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)

    @property
    def total(self) -> int:
        return self.impressions + self.clicks + self.purchases


def shop(edge: Service, shopper: Shopper, k: int, sent: Sent) -> None:
    """One shopper's visit: the personalized answer, then a click and a purchase per offer they really bought."""
    import http.client

    conn = http.client.HTTPConnection(f"127.0.0.1:{edge.port}", timeout=30)
    try:
        body = {
            "shopper_id": shopper.shopper_id,
            "region": shopper.region,
            "k": k,
            "slot": "home",
            "recent_items": shopper.recent_items,
        }
        conn.request("POST", "/v1/recommendations", json.dumps(body), {"Content-Type": "application/json"})
        resp = conn.getresponse()
        raw = resp.read()
        if resp.status != 200:
            raise RuntimeError(f"edge {shopper.region} answered HTTP {resp.status}: {raw[:300]!r}")
        answer = json.loads(raw)
        with sent.lock:
            sent.impressions += 1
            sent.by_variant[str(answer.get("variant"))] += 1
        events = []
        for offer in answer["offers"]:
            value = shopper.bought.get(offer["sku"])
            if value is None:
                continue
            common = {
                "request_id": answer["request_id"],
                "offer_ids": [offer["offer_id"]],
                "shopper_id": shopper.shopper_id,
            }
            events.append({"type": "click", **common})
            events.append({"type": "purchase", **common, "value": value, "currency": offer["currency"]})
        if events:
            conn.request("POST", "/v1/events", json.dumps({"events": events}), {"Content-Type": "application/json"})
            resp = conn.getresponse()
            raw = resp.read()
            if resp.status != 202 or json.loads(raw).get("accepted") != len(events):
                raise RuntimeError(f"edge {shopper.region} refused events: HTTP {resp.status} {raw[:300]!r}")
            with sent.lock:
                sent.clicks += len(events) // 2
                sent.purchases += len(events) // 2
    finally:
        conn.close()


def run_shoppers(edges: dict[str, Service], shoppers: list[Shopper], k: int, concurrency: int, sent: Sent) -> float:
    from tqdm import tqdm

    started = time.perf_counter()
    with (
        concurrent.futures.ThreadPoolExecutor(concurrency) as pool,
        tqdm(total=len(shoppers), desc="      shoppers", unit=" shopper", file=sys.stdout, mininterval=1.0) as progress,
    ):
        futures = [pool.submit(shop, edges[s.region], s, k, sent) for s in shoppers]
        for future in concurrent.futures.as_completed(futures):
            future.result()
            progress.update()
    return time.perf_counter() - started


def wait_drained(cluster: Cluster, expected: int, timeout_s: float, settle_s: float = 2.0) -> tuple[int, float]:
    """Until the origin holds `expected` events and the count stays put for `settle_s` (or the timeout): (count,
    seconds)."""
    started = time.monotonic()
    last, stable_since = -1, time.monotonic()
    while True:
        count = stored(cluster, "SELECT COUNT(*) FROM events")
        count = count[0][0] if count else 0
        now = time.monotonic()
        if count != last:
            last, stable_since = count, now
        if count >= expected and now - stable_since >= settle_s:
            return count, now - started
        if now - started > timeout_s and now - stable_since >= settle_s:
            return count, now - started
        time.sleep(0.2)


def spool_metrics(edge: Service) -> dict[str, float]:
    status, _, raw = http_call(edge.url, "GET", "/metrics")
    values = {}
    for line in raw.decode(errors="replace").splitlines() if status == 200 else []:
        if line.startswith("edgerec_events_") and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            try:
                values[name] = float(value)
            except ValueError:
                pass
    return values


def integrity(cluster: Cluster, sent: Sent, before: dict[str, int]) -> dict[str, Any]:
    """What the origin's event store holds against what was sent: per kind, lost and duplicated events."""
    rows = dict(stored(cluster, "SELECT kind, COUNT(*) FROM events GROUP BY kind"))
    distinct = stored(cluster, "SELECT COUNT(DISTINCT id), COUNT(*) FROM events")[0]
    per_request = stored(
        cluster,
        "SELECT COUNT(*) FROM (SELECT request_id FROM events WHERE kind = 'impression' "
        "GROUP BY request_id HAVING COUNT(*) > 1)",
    )[0][0]
    sent_by_kind = {"impression": sent.impressions, "click": sent.clicks, "purchase": sent.purchases}
    lost = duplicates = 0
    kinds = {}
    for kind, n in sent_by_kind.items():
        got = rows.get(kind, 0) - before.get(kind, 0)
        kinds[kind] = {"sent": n, "ingested": got}
        lost += max(0, n - got)
        duplicates += max(0, got - n)
    duplicates = max(duplicates, distinct[1] - distinct[0], per_request)
    return {
        "by_kind": kinds,
        "ingested": sum(v["ingested"] for v in kinds.values()),
        "lost": lost,
        "duplicates": duplicates,
        "distinct_ids": distinct[0],
        "rows": distinct[1],
        "impressions_with_repeated_request_id": per_request,
    }


def summarize(origin_report: dict[str, Any]) -> dict[str, Any]:
    variants = {}
    for name, v in origin_report["variants"].items():
        rpi = v["revenue_per_impression"]
        variants[name] = {
            "model": v.get("model"),
            "impressions": v["impressions"],
            "clicks": v["clicks"],
            "conversions": v["conversions"],
            # Per currency (GBP in GB, EUR elsewhere): never one sum across currencies.
            "revenue": {cur: round(value, 2) for cur, value in v["revenue"].items()},
            "ctr": v["ctr"]["rate"],
            "ctr_ci95": [v["ctr"]["ci_low"], v["ctr"]["ci_high"]],
            "conversion": v["conversion"]["rate"],
            "ci95": [v["conversion"]["ci_low"], v["conversion"]["ci_high"]],
            "revenue_per_impression": {cur: r["mean"] for cur, r in rpi.items()},
            "revenue_per_impression_ci95": {cur: [r["ci_low"], r["ci_high"]] for cur, r in rpi.items()},
        }
    leader = origin_report["leader"]
    others = [n for n in variants if n != leader]
    runner_up = max(others, key=lambda n: variants[n]["conversion"] or 0.0) if others else None
    base = variants[runner_up]["conversion"] if runner_up else None
    rate = variants[leader]["conversion"]
    uplift = (rate / base - 1) if base and rate is not None else None
    return {
        "variants": variants,
        "winner": leader,
        "significant": origin_report["significant"],
        "runner_up": runner_up,
        "uplift": uplift,
        "p_value": origin_report["p_value"],
        "uplift_vs_control": origin_report["uplift"],
        "currencies": origin_report["currencies"],
        "revenue_by_currency": origin_report["revenue_by_currency"],
        "unattributed": origin_report["unattributed"],
    }


def fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and value != 0 and abs(value) < 10**-digits:
        return f"{value:.2e}"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def render_markdown(report: dict[str, Any], plot: str) -> str:
    s = report["settings"]
    lines = [
        f"# Experiment simulation: {report['experiment']}",
        "",
        f"`{report['command']}` on {report['machine']['logical_cpus']} CPUs, "
        f"{report['machine']['started_at']}, {report['wall_seconds']} s.",
        "",
        f"Data: {s['data']}. History before {s['cut']} trains both models; shoppers are the customers of "
        f"{' and '.join(s['regions'])} with history and purchases from {s['cut']} to {s['test_end']} "
        f"(exclusive): an offered item they really bought then counts as a click and a purchase worth their "
        f"spend on it. Control `popularity` (region popularity only), treatment `model` (the trained "
        f"ranker), 50/50; k = {s['k']}; {s['offers']} offers "
        f"({', '.join(f'{r} {n}' for r, n in s['offers_per_region'].items())}).",
        "",
    ]
    if s.get("note"):
        lines += [f"> **Note:** {s['note']}", ""]
    currencies = report["currencies"]
    lines += [
        "| variant | impressions | CTR [95% CI] | conversion [95% CI] | "
        + "".join(f"revenue / impression, {cur} [95% CI] | " for cur in currencies),
        "|---|---:|---:|---:|" + "---:|" * len(currencies),
    ]
    for name, v in report["variants"].items():
        lines.append(
            f"| {name} | {v['impressions']:,} | {fmt(v['ctr'])} [{fmt(v['ctr_ci95'][0])}, "
            f"{fmt(v['ctr_ci95'][1])}] | {fmt(v['conversion'])} [{fmt(v['ci95'][0])}, {fmt(v['ci95'][1])}] | "
            + "".join(
                f"{fmt(v['revenue_per_impression'][cur], 3)} "
                f"[{fmt(v['revenue_per_impression_ci95'][cur][0], 3)}, "
                f"{fmt(v['revenue_per_impression_ci95'][cur][1], 3)}] | "
                for cur in currencies
            )
        )
    srm = report["origin_report"]["sample_ratio"]
    lines += [
        "",
        f"**Winner: {report['winner']}** ({'significant' if report['significant'] else 'NOT significant'} "
        f"at 5%): conversion uplift {fmt(report['uplift'] * 100 if report['uplift'] is not None else None, 1)}% "
        f"over {report['runner_up']}, two-proportion z-test p = {fmt(report['p_value'], 6)}; sample ratio "
        f"chi² p = {fmt(srm['p_value'])}{' (MISMATCH)' if srm['mismatch'] else ' (sound)'}.",
        "",
    ]
    for cur in currencies:
        test = report["revenue_by_currency"][cur]
        lines += [
            f"Revenue per impression in {cur} (impressions of {', '.join(test['regions'])}): leader "
            f"{test['leader']}, {'significant' if test['significant'] else 'NOT significant'} at 5% (Welch "
            f"p = {fmt(test['p_value'], 6)}, uplift over the control "
            f"{fmt(test['uplift'] * 100 if test['uplift'] is not None else None, 1)}%).",
            "",
        ]
    lines += [
        f"Events: {report['events_sent']:,} sent (impressions, clicks, purchases), {report['events_ingested']:,} "
        f"ingested at the origin, {report['duplicates']} duplicates, {report['lost']} lost; the spools drained "
        f"{fmt(report['timings']['drain_seconds'], 1)} s after the last shopper.",
        "",
        "| kind | sent | ingested |",
        "|---|---:|---:|",
    ]
    for kind, v in report["integrity"]["by_kind"].items():
        lines.append(f"| {kind} | {v['sent']:,} | {v['ingested']:,} |")
    lines += [
        "",
        "Revenue is in each region's offer currency (GBP in GB, EUR elsewhere, converted from the data's GBP "
        f"at {EUR_PER_GBP}) and reported per currency, never summed across them; each currency's revenue per "
        "impression is over the impressions of the regions that pay in it. CTR equals conversion by "
        "construction (a simulated click is always a purchase). Feedback that no impression explains: "
        f"{report['unattributed']}.",
        "",
        f"![results]({plot})",
        "",
    ]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    wall = time.monotonic()
    out: Path = args.out
    work = out / "work"
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    timings: dict[str, float] = {}
    data, label = resolve_data(args.data)
    note = None
    if data is None:
        from models.synthetic import write_synthetic_transactions

        data = write_synthetic_transactions(work / "transactions.csv.gz", seed=7)
        note = (
            "the shared Online Retail data was not found: " if args.data == "auto" else ""
        ) + "these figures come from SYNTHETIC data (models.synthetic), not from real shoppers"
        say(f"NOTE: {note}")
    say(f"[1/6] splitting {label} at {args.cut}")
    t = time.monotonic()
    history, test, history_path, test_end = split_data(data, args.cut, args.test_days, work)
    regions = pick_regions(args.regions, test, history)
    say("[2/6] training the model and the popularity ranker on the history")
    model_dir, popularity_dir, models_info = train_models(history_path, work, args.quick)
    timings["data_and_training_seconds"] = round(time.monotonic() - t, 1)
    say(
        f"      model {models_info['model']}, popularity {models_info['popularity']}, "
        f"{timings['data_and_training_seconds']} s"
    )
    known = set(models_info["items"])
    shoppers = build_shoppers(history, test, regions, args.cut, models_info["context_length"], known)
    limit = args.shoppers or (300 if args.quick else 0)
    everyone = [s for r in regions for s in shoppers[r]]
    if limit and len(everyone) > limit:  # keep the regions' proportions, deterministically
        rng = np.random.default_rng(0)
        everyone = [everyone[i] for i in sorted(rng.choice(len(everyone), limit, replace=False))]
    per_region_shoppers = {r: sum(1 for s in everyone if s.region == r) for r in regions}
    offers = region_offers(history, regions, known, 400 if args.quick else 0)
    offer_counts = {r: sum(1 for o in offers if o["regions"] == [r]) for r in regions}

    cluster = Cluster(work, regions=regions)
    try:
        say(
            f"[3/6] origin: publishing both models and {len(offers)} offers "
            f"({', '.join(f'{r} {n}' for r, n in offer_counts.items())})"
        )
        t = time.monotonic()
        cluster.start_origin()
        cluster.publish(popularity_dir)
        cluster.publish(model_dir)
        cluster.put_offers(offers)
        experiment = {
            "id": EXPERIMENT_ID,
            "regions": list(regions),
            "variants": [
                {"name": "popularity", "weight": 1, "model": models_info["popularity"]},
                {"name": "model", "weight": 1, "model": models_info["model"]},
            ],
        }
        saved = cluster.admin("PUT", f"/v1/admin/experiments/{EXPERIMENT_ID}", experiment)
        say(f"      experiment {EXPERIMENT_ID} at data version {saved['data_version']}")
        say(f"[4/6] starting one edge per region ({', '.join(regions)})")
        edges = dict(zip(regions, cluster.start_edges(*(cluster.edge(r) for r in regions), timeout_s=60)))
        cluster.wait_for_version(saved["data_version"], offer_counts)
        timings["setup_seconds"] = round(time.monotonic() - t, 1)
        before = dict(stored(cluster, "SELECT kind, COUNT(*) FROM events GROUP BY kind"))

        say(
            f"[5/6] {len(everyone)} shoppers ({', '.join(f'{r} {n}' for r, n in per_region_shoppers.items())}), "
            f"{args.concurrency} at a time"
        )
        sent = Sent()
        timings["shopping_seconds"] = round(run_shoppers(edges, everyone, args.k, args.concurrency, sent), 1)
        say(
            f"      sent {sent.total} events: {sent.impressions} impressions "
            f"({dict(sent.by_variant)}), {sent.clicks} clicks, {sent.purchases} purchases"
        )
        ingested, drain = wait_drained(cluster, sent.total + sum(before.values()), timeout_s=60)
        timings["drain_seconds"] = round(drain, 1)
        spools = {r: spool_metrics(e) for r, e in edges.items()}
        checked = integrity(cluster, sent, before)
        say(
            f"      origin holds {checked['ingested']} of them after {drain:.1f} s: lost {checked['lost']}, "
            f"duplicates {checked['duplicates']}"
        )

        say("[6/6] the origin's report")
        origin_report = cluster.admin("GET", f"/v1/admin/experiments/{EXPERIMENT_ID}/report")
    finally:
        cluster.stop()

    summary = summarize(origin_report)
    report = {
        "experiment": EXPERIMENT_ID,
        **summary,
        "events_sent": sent.total,
        "events_ingested": checked["ingested"],
        "duplicates": checked["duplicates"],
        "lost": checked["lost"],
        "integrity": checked,
        "spool_metrics": spools,
        "shoppers": per_region_shoppers,
        "impressions_by_variant_sent": dict(sent.by_variant),
        "models": {k: v for k, v in models_info.items() if k != "items"},
        "settings": {
            "data": label,
            "note": note,
            "cut": args.cut,
            "test_end": test_end,
            "regions": list(regions),
            "k": args.k,
            "quick": args.quick,
            "shoppers_limit": limit or None,
            "offers": len(offers),
            "offers_per_region": offer_counts,
            "concurrency": args.concurrency,
        },
        "timings": timings,
        "machine": {
            "logical_cpus": os.cpu_count(),
            "python": sys.version.split()[0],
            "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        },
        "command": "python -m benchmarks.experiment " + " ".join(sys.argv[1:]),
        "origin_report": origin_report,
    }
    from origin_sync.origin.report_plot import plot_report

    plot_report(origin_report, str(out / "experiment.png"))
    report["wall_seconds"] = round(time.monotonic() - wall, 1)
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str))
    (out / "report.md").write_text(render_markdown(report, "experiment.png"))
    if not args.keep_work:
        shutil.rmtree(work, ignore_errors=True)
    say("")
    for name, v in report["variants"].items():
        say(
            f"  {name:11s} impressions {v['impressions']:6d}  CTR {fmt(v['ctr'])}  conversion {fmt(v['conversion'])} "
            f"[{fmt(v['ci95'][0])}, {fmt(v['ci95'][1])}]"
        )
    say(
        f"  winner {report['winner']} ({'significant' if report['significant'] else 'not significant'}), uplift "
        f"{fmt(report['uplift'])}, p {fmt(report['p_value'], 6)}; events sent {report['events_sent']}, ingested "
        f"{report['events_ingested']}, duplicates {report['duplicates']}, lost {report['lost']}; "
        f"{report['wall_seconds']} s"
    )
    for name in ("report.json", "report.md", "experiment.png"):
        say(f"  wrote {out / name}")
    ok = report["duplicates"] == 0 and report["lost"] == 0 and report["events_ingested"] == report["events_sent"]
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    return interruptible(run, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
