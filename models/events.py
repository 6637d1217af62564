"""Training data from the shop's own events (what the origin's sinks hold): purchases and add-to-carts as positives,
impressions without feedback as shown-but-not-taken, in the Transactions form that training and evaluation read;
and the comparison of two bundles on the latest held-out week."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from models.data import NO_CUSTOMER, Transactions, is_product_code

POSITIVE_KINDS = ("purchase", "add_to_cart")
IMPRESSION = "impression"
FEEDBACK_KINDS = ("click", "add_to_cart", "purchase")
HELD_OUT_DAYS = 7  # the latest week: never trained on, the offline gate's ground


def customer_of(pseudonym: str | None) -> int:
    """A stable positive int64 customer id of a shopper pseudonym (NO_CUSTOMER for an anonymous event)."""
    if not pseudonym:
        return NO_CUSTOMER
    return int.from_bytes(hashlib.sha256(pseudonym.encode()).digest()[:7], "big")


def _empty(size: int = 0) -> dict[str, list[Any]]:
    return {name: [] for name in ("invoice_no", "stock_code", "customer_id", "ts", "region", "unit_price")}


def _transactions(columns: dict[str, list[Any]]) -> Transactions:
    size = len(columns["invoice_no"])
    regions = np.array(columns["region"], dtype=object)
    return Transactions(
        invoice_no=np.array(columns["invoice_no"], dtype=object),
        stock_code=np.array(columns["stock_code"], dtype=object),
        description=np.array([""] * size, dtype=object),
        quantity=np.ones(size, dtype=np.int64),
        invoiced_at=np.array(np.round(np.array(columns["ts"], dtype=np.float64)), dtype="int64").astype(
            "datetime64[s]"
        ),
        unit_price=np.array(columns["unit_price"], dtype=np.float64),
        customer_id=np.array(columns["customer_id"], dtype=np.int64),
        country=regions.copy(),
        region=regions,
    )


@dataclass(frozen=True)
class EventTrainingSet:
    """The events as line items: `positives` (purchases and add-to-carts), `shown` (offers of impressions that got
    no feedback), and what the training report says of them."""

    positives: Transactions
    shown: Transactions
    counts: dict[str, int]
    window: tuple[float, float] | None  # epoch seconds of the first and last event


def training_set(events: Iterable[Mapping[str, Any]], sku_of: Mapping[str, str] | None = None) -> EventTrainingSet:
    """Line items of event rows (the sinks' columns; `offer_ids` a list). An offer becomes its SKU through `sku_of`
    (the origin's offers), else its own id upper-cased. Events are sorted by (ts, id), so the same events give the
    same set in whatever order they were read."""
    rows = sorted(events, key=lambda e: (float(e["ts"]), str(e["id"])))
    sku_of = sku_of or {}
    counts = {kind: 0 for kind in ("impression", "click", "add_to_cart", "purchase")}
    answered: set[str] = set()
    for event in rows:
        counts[event["kind"]] = counts.get(event["kind"], 0) + 1
        if event["kind"] in FEEDBACK_KINDS:
            answered.add(str(event["request_id"]))
    positives, shown = _empty(), _empty()
    for event in rows:
        kind = event["kind"]
        if kind in POSITIVE_KINDS:
            target = positives
        elif kind == IMPRESSION and str(event["request_id"]) not in answered:
            target = shown
        else:
            continue
        offers = list(event["offer_ids"])
        price = float(event.get("value") or 0.0) / max(len(offers), 1) if kind == "purchase" else 0.0
        for offer in offers:
            sku = str(sku_of.get(offer, offer)).upper()
            if not is_product_code(sku):
                continue
            target["invoice_no"].append(f"{'P' if kind == 'purchase' else 'A'}{event['id']}")
            target["stock_code"].append(sku)
            target["customer_id"].append(customer_of(event.get("shopper")))
            target["ts"].append(float(event["ts"]))
            target["region"].append(str(event["region"]).upper())
            target["unit_price"].append(price if price > 0 else 1.0)
    counts["shown_not_taken"] = len({event["request_id"] for event in rows if event["kind"] == IMPRESSION} - answered)
    counts["positive_lines"] = len(positives["invoice_no"])
    counts["shown_lines"] = len(shown["invoice_no"])
    counts["shoppers"] = len({c for c in positives["customer_id"] if c != NO_CUSTOMER})
    window = (float(rows[0]["ts"]), float(rows[-1]["ts"])) if rows else None
    return EventTrainingSet(_transactions(positives), _transactions(shown), counts, window)


def with_orders(
    data: EventTrainingSet, orders: Transactions, pseudonym_of: Callable[[str], str] | None
) -> EventTrainingSet:
    """The training set with the shop's imported order history (Online Retail rows) added to its positives: each
    order's CustomerID becomes the pseudonym the edges give that shopper id (`pseudonym_of`, the deployment's keyed
    hash), so a shopper's orders and events are one history; without it the orders count for popularity only."""
    from dataclasses import fields as dataclass_fields

    from models.data import clean_purchases

    clean = clean_purchases(orders, require_customer=False)
    customers = clean.customer_id.tolist()
    mapped = [
        customer_of(pseudonym_of(str(c))) if pseudonym_of is not None and c != NO_CUSTOMER else NO_CUSTOMER
        for c in customers
    ]
    clean = Transactions(
        **{
            f.name: np.array(mapped, dtype=np.int64) if f.name == "customer_id" else getattr(clean, f.name)
            for f in dataclass_fields(clean)
        }
    )
    merged = Transactions(
        **{
            f.name: np.concatenate([getattr(clean, f.name), getattr(data.positives, f.name)])
            for f in dataclass_fields(clean)
        }
    )
    counts = {**data.counts, "order_lines": len(clean), "order_shoppers": len(set(mapped) - {NO_CUSTOMER})}
    first = float(clean.invoiced_at.min().astype("datetime64[s]").astype(np.int64)) if len(clean) else None
    window = data.window
    if first is not None:
        window = (min(first, window[0]) if window else first, window[1] if window else first)
    return EventTrainingSet(merged, data.shown, counts, window)


def split_latest_week(
    transactions: Transactions, days: int = HELD_OUT_DAYS
) -> tuple[Transactions, Transactions, np.datetime64]:
    """(everything before the latest `days`, the latest `days`, their boundary)."""
    if len(transactions) == 0:
        return transactions, transactions, np.datetime64("NaT")
    boundary = transactions.invoiced_at.max() + np.timedelta64(1, "s") - np.timedelta64(days, "D")
    return (
        transactions.select(transactions.invoiced_at < boundary),
        transactions.select(transactions.invoiced_at >= boundary),
        boundary,
    )


def compare_on_week(rankers: Mapping[str, Any], history: Transactions, week: Transactions) -> dict[str, Any]:
    """NDCG@10 and the other metrics of each ranker (name -> models.runtime.Ranker) on the week's shoppers, their
    profiles built from the history as an edge holds them: the offline gate's evidence."""
    from models.evaluate import K, evaluation_users, model_top
    from models.metrics import ranking_metrics

    widest = max((ranker.context_length for ranker in rankers.values()), default=1)
    users = evaluation_users(history, week, widest)
    report: dict[str, Any] = {"users": len(users.customers), "k": K, "models": {}}
    if not users.customers:
        return report
    history_seen = users.history_counts > 0
    for name, ranker in rankers.items():
        top = model_top(ranker, users, None)
        report["models"][name] = {
            "version": ranker.version,
            **ranking_metrics(top, users.targets, history_seen, len(users.candidates)),
        }
    return report


# Event data spans weeks, not the years of the Online Retail file: weekly cuts, a week's horizon.
EVENT_TRAINING = {"horizon_days": 7, "cut_spacing_days": 7, "training_cuts": 4, "min_history_days": 7}


def train_on_events(
    data: EventTrainingSet,
    out_dir: Any,
    *,
    served_bundle: Any = None,
    seed: int = 0,
    progress: bool = True,
    held_out_days: int = HELD_OUT_DAYS,
    adjust: Callable[[Any], Any] | None = None,
) -> dict[str, Any]:
    """Train a bundle on every event before the latest week (shown-but-not-taken items as negatives), write it to
    out_dir, and compare it with the served bundle (when given) on that week. Returns the training report: data
    window, counts, the week's metrics per model and the manifest's version. Deterministic for the same events and
    seed (the bundle's bytes, hence its version, are the same). `adjust` (drills and benchmarks only): a change to
    the fitted TrainedRanker before it is written, e.g. a deliberately bad candidate; the report measures what was
    written."""
    from models.data import DataError
    from models.runtime import Ranker
    from models.train import TrainingConfig, fit_ranking_model, write_trained_bundle

    history, week, boundary = split_latest_week(data.positives, held_out_days)
    if len(week) == 0 or len(history) == 0:
        raise DataError(f"events: need purchases or add-to-carts before and during the latest {held_out_days} days")
    shown = data.shown.select(data.shown.invoiced_at < boundary)
    config = TrainingConfig(seed=seed, **EVENT_TRAINING)
    trained = fit_ranking_model(history, config, data_name="events", progress=progress, shown=shown)
    if adjust is not None:
        trained = adjust(trained)
    manifest = write_trained_bundle(trained, out_dir, config)
    rankers = {"candidate": Ranker.load(out_dir)}
    if served_bundle is not None:
        rankers["served"] = Ranker.load(served_bundle)
    week_metrics = compare_on_week(rankers, history, week)
    first, last = data.window or (0.0, 0.0)
    return {
        "model_version": manifest["version"],
        "seed": seed,
        "data_window": {"first_event": first, "last_event": last},
        "training_window": {"until": str(boundary)},
        "held_out_week": {"from": str(boundary), "days": held_out_days, **week_metrics},
        "counts": {**data.counts, "training_lines": len(history), "held_out_lines": len(week)},
        "validation_metrics": trained.report["metrics"],
        "training_seconds": trained.report["seconds"],
    }
