"""`edgerec model train --events DSN | --from-origin URL`: train on the shop's own events (the origin's SQL sink, read
directly, or through the admin API), compare with the served model on the latest held-out week, and leave a
training report (training_report.json and training_report.png beside the bundle)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any, Callable

from edgerec.cli.admin import AdminError, _call, _origin_tls, _token
from edgerec.cli.process import http_call
from edgerec.cli.services import admin_headers

PAGE = 10_000
REPORT_JSON, REPORT_PLOT = "training_report.json", "training_report.png"


def _is_postgres(dsn: str) -> bool:
    return dsn.startswith(("postgres://", "postgresql://"))


async def _read_sql(dsn: str, store: str | None, progress: bool) -> tuple[list[dict[str, Any]], dict[str, str]]:
    from tqdm import tqdm

    from origin_sync.origin.sinks.sql import read_events_page
    from origin_sync.origin.store import offers
    from origin_sync.origin.store.dialect import Engine, PostgresEngine, SQLiteEngine

    def engine_of(target: str) -> Engine:
        return PostgresEngine(target, None, min_size=1, max_size=2) if _is_postgres(target) else SQLiteEngine(target)

    if not _is_postgres(dsn) and not Path(dsn).is_file():
        raise AdminError(f"--events {dsn}: no such SQLite file (the origin's events.db) and not a PostgreSQL DSN")
    events: list[dict[str, Any]] = []
    engine = engine_of(dsn)
    await engine.open()
    try:
        with tqdm(desc="reading events", unit=" events", disable=not progress) as bar:
            after = None
            while True:
                page = await engine.run(lambda conn, after=after: read_events_page(conn, after, PAGE))
                events += page
                bar.update(len(page))
                if len(page) < PAGE:
                    break
                after = (page[-1]["ts"], page[-1]["id"])
    finally:
        await engine.close()
    # The SKU of each offer lives in the change-log store: the same database (PostgreSQL), else origin.db beside.
    store = store or (dsn if _is_postgres(dsn) else str(Path(dsn).with_name("origin.db")))
    if not _is_postgres(store) and not Path(store).is_file():
        return events, {}
    engine = engine_of(store)
    await engine.open()
    try:
        ids = sorted({o for e in events for o in e["offer_ids"]})
        return events, await engine.run(lambda conn: offers.skus_of(conn, ids))
    finally:
        await engine.close()


def events_from_sql(
    dsn: str, store: str | None = None, progress: bool = True
) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Every stored event of a SQL sink (a SQLite file or a PostgreSQL DSN) and offer id -> SKU from the store."""
    return asyncio.run(_read_sql(dsn, store, progress))


def events_from_origin(origin: str, progress: bool = True) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Every stored event, page by page through the admin API (GET /v1/admin/events), and their offers' SKUs."""
    from tqdm import tqdm

    args = argparse.Namespace(origin=origin)
    events: list[dict[str, Any]] = []
    skus: dict[str, str] = {}
    query = ""
    with tqdm(desc="reading events", unit=" events", disable=not progress) as bar:
        while True:
            page = _call(args, "GET", f"/v1/admin/events?limit={PAGE}{query}", timeout=300)
            events += page["events"]
            skus.update(page["skus"])
            bar.update(len(page["events"]))
            if page["next"] is None:
                return events, skus
            query = f"&after_ts={page['next']['after_ts']!r}&after_id={page['next']['after_id']}"


def fetch_bundle(origin: str, version: str, out: Path) -> Path:
    """Download a stored model's bundle (model.onnx + manifest.json) into `out`."""
    import msgpack

    status, _, raw = http_call(
        origin,
        "GET",
        f"/v1/admin/models/{version}/bundle",
        headers=admin_headers(_token()),
        timeout=120,
        ssl_context=_origin_tls(origin),
    )
    if status != 200:
        raise AdminError(f"GET /v1/admin/models/{version}/bundle: HTTP {status}: {raw[:200]!r}")
    payload = msgpack.unpackb(raw, raw=False)
    out.mkdir(parents=True, exist_ok=True)
    (out / "model.onnx").write_bytes(payload["model"])
    (out / "manifest.json").write_text(json.dumps(payload["manifest"]))
    return out


def active_version(origin: str) -> str | None:
    models = _call(argparse.Namespace(origin=origin), "GET", "/v1/admin/models")["models"]
    return next((m["version"] for m in models if m["state"] == "active"), None)


def plot_training_report(report: dict[str, Any], path: Path) -> Path:
    """Counts of the events trained on and NDCG@10 of each model on the held-out week, as one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = report["counts"]
    week = report["held_out_week"]
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    kinds = ["impression", "click", "add_to_cart", "purchase", "shown_not_taken"]
    left.bar(kinds, [counts.get(k, 0) for k in kinds], color="#3b7dd8")
    left.set_title("events read")
    left.tick_params(axis="x", rotation=30)
    names = list(week.get("models", {}))
    right.bar(names, [week["models"][n]["ndcg@10"] for n in names], color=["#e07b39", "#888888"][: len(names)])
    right.set_title(f"NDCG@10 on the held-out week from {week['from'][:10]} ({week.get('users', 0)} shoppers)")
    figure.suptitle(f"training report: {report['model_version']}")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def train_from_events(
    events: list[dict[str, Any]],
    skus: dict[str, str],
    out: Path,
    *,
    served_bundle: Path | None,
    seed: int,
    progress: bool,
    held_out_days: int = 7,
    orders: Path | None = None,
    adjust: Callable[[Any], Any] | None = None,
) -> dict[str, Any]:
    """Train a bundle into `out` and write its training report and plot beside it; returns the report. `orders`: the
    shop's order history (Online Retail CSV), its CustomerIDs pseudonymized with EDGEREC_PSEUDONYM_KEY. `adjust`:
    see models.events.train_on_events (drills and benchmarks only)."""
    from models.events import train_on_events, training_set, with_orders

    data = training_set(events, skus)
    if orders is not None:
        from models.data import read_transactions

        data = with_orders(data, read_transactions(orders, progress=progress), _pseudonym_of())
    report = train_on_events(
        data,
        out,
        served_bundle=served_bundle,
        seed=seed,
        progress=progress,
        held_out_days=held_out_days,
        adjust=adjust,
    )
    report["plot"] = str(plot_training_report(report, out / REPORT_PLOT))
    (out / REPORT_JSON).write_text(json.dumps(report, indent=2, sort_keys=True))
    return report


def _pseudonym_of() -> Any:
    """The edges' keyed pseudonym of a shopper id (EDGEREC_PSEUDONYM_KEY), or None when the key is not set."""
    import os

    from origin_sync.wire.events import pseudonym_key, pseudonymize

    secret = os.environ.get("EDGEREC_PSEUDONYM_KEY", "").strip()
    if not secret:
        return None
    key = pseudonym_key(secret)
    return lambda shopper_id: pseudonymize(key, shopper_id)


def run_train_from_events(args: argparse.Namespace) -> int:
    from models.data import DataError

    out = Path(args.out)
    try:
        if args.events:
            events, skus = events_from_sql(args.events, args.store, progress=True)
        else:
            events, skus = events_from_origin(args.from_origin, progress=True)
        served = Path(args.served) if args.served else None
        if served is None and args.from_origin:
            version = active_version(args.from_origin)
            served = fetch_bundle(args.from_origin, version, out.with_name(out.name + ".served")) if version else None
        orders = Path(args.orders) if args.orders else None
        report = train_from_events(
            events, skus, out, served_bundle=served, seed=args.seed, progress=True, orders=orders
        )
    except DataError as error:
        print(f"edgerec model train: {error}", file=sys.stderr)
        return 2
    week = report["held_out_week"]
    figures = ", ".join(f"{name} {m['ndcg@10']:.4f}" for name, m in week.get("models", {}).items())
    print(
        f"bundle {report['model_version']} written to {out} from {report['counts']['positive_lines']} positive lines "
        f"and {report['counts']['shown_not_taken']} impressions without feedback; held-out week NDCG@10: {figures}; "
        f"report {out / REPORT_JSON}"
    )
    return 0


def extend_train_command(train: argparse.ArgumentParser) -> None:
    """`model train` also reads the origin's events: --events DSN or --from-origin URL instead of --data."""
    from models.cli import run_train

    source = train.add_mutually_exclusive_group()
    source.add_argument("--events", metavar="DSN", help="the origin's SQL event sink: events.db or a PostgreSQL DSN")
    source.add_argument("--from-origin", metavar="URL", help="the origin's admin API (token: EDGEREC_ADMIN_TOKEN)")
    train.add_argument("--store", help="with --events: the change-log store for offer SKUs (default: beside it)")
    train.add_argument("--served", help="the served model's bundle to compare with (--from-origin: fetched)")
    train.add_argument(
        "--orders", help="with --events/--from-origin: the shop's order history too (CSV; EDGEREC_PSEUDONYM_KEY)"
    )
    train.add_argument("--seed", type=int, default=0, help="the training seed (same events + seed = same bundle)")

    def run(args: argparse.Namespace) -> int:
        if args.events or args.from_origin:
            if args.data:
                raise AdminError("--data and --events/--from-origin: give one source")
            return run_train_from_events(args)
        if not args.data:
            raise AdminError("model train needs --data CSV, --events DSN or --from-origin URL")
        return run_train(args)

    train.set_defaults(func=run)
