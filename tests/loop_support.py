"""Crafted event sets for the learning loop's tests: a synthetic shop's purchases (and impressions) as the event rows
an origin's SQL sink stores, and experiment traffic with chosen conversion rates."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from models.data import clean_purchases, read_transactions


def shop_events(csv: Path, *, impressions_every: int = 3, shift_to: float | None = None) -> list[dict[str, Any]]:
    """A purchase event per invoice (its items the offers, offer id = SKU) of a synthetic shop, and every so often an
    impression that got no feedback; `shift_to` moves the last event to that epoch second (the rest with it)."""
    purchases = clean_purchases(read_transactions(csv), require_customer=True)
    seconds = purchases.invoiced_at.astype("datetime64[s]").astype(np.int64).astype(float)
    shift = 0.0 if shift_to is None else shift_to - float(seconds.max())
    invoices: dict[str, dict[str, Any]] = {}
    for invoice, sku, customer, ts, region in zip(
        purchases.invoice_no.tolist(),
        purchases.stock_code.tolist(),
        purchases.customer_id.tolist(),
        seconds.tolist(),
        purchases.region.tolist(),
    ):
        event = invoices.setdefault(
            invoice,
            {
                "id": f"p{invoice}",
                "kind": "purchase",
                "ts": ts + shift,
                "region": region or "GB",
                "request_id": f"r{invoice}",
                "shopper": f"s{customer:08d}",
                "offer_ids": [],
                "value": 0.0,
                "currency": "GBP",
            },
        )
        if sku not in event["offer_ids"]:
            event["offer_ids"].append(sku)
            event["value"] += 2.5
    events = list(invoices.values())
    skus = sorted({o for e in events for o in e["offer_ids"]})
    for n, event in enumerate(events[::impressions_every]):
        events.append(
            {
                **event,
                "id": f"i{n}",
                "kind": "impression",
                "ts": event["ts"] - 60,
                "request_id": f"q{n}",
                "offer_ids": [skus[(n * 7919) % len(skus)], skus[(n * 104729) % len(skus)]],
                "value": None,
                "currency": None,
            }
        )
    return [row(e) for e in events]


def row(event: dict[str, Any]) -> dict[str, Any]:
    """A full sink row (every column) of a partial event."""
    return {
        "experiment": None,
        "variant": None,
        "value": None,
        "currency": None,
        "model_version": None,
        "data_version": None,
        "slot": None,
        "shopper": None,
        **event,
    }


def experiment_traffic(
    experiment: str, rates: dict[str, float], impressions: dict[str, int], *, ts: float, seed: int = 0
) -> list[dict[str, Any]]:
    """Impressions of each variant, and a purchase following each with the variant's conversion rate."""
    rng = np.random.default_rng(seed)
    events = []
    for variant, n in impressions.items():
        for converted in rng.random(n) < rates[variant]:
            request = uuid.UUID(int=int(rng.integers(0, 2**63))).hex
            base = {
                "ts": ts,
                "region": "GB",
                "request_id": request,
                "shopper": f"x{request[:12]}",
                "experiment": experiment,
                "variant": variant,
                "offer_ids": ["O-1"],
            }
            events.append(row({**base, "id": f"i{request}", "kind": "impression"}))
            if converted:
                events.append(row({**base, "id": f"b{request}", "kind": "purchase", "value": 10.0, "currency": "GBP"}))
    return events


def store_events(events_db: Path, events: list[dict[str, Any]]) -> None:
    """Write events into an origin's SQLite event sink as one batch (the origin may be running: WAL)."""
    from origin_sync.origin.sinks.sql import SQLiteEventSink

    sink = SQLiteEventSink(events_db)
    asyncio.run(sink.write_batch(uuid.uuid4().hex, events))
    asyncio.run(sink.close())


def store_health(events_db: Path, experiment: str, counts: dict[str, tuple[int, int, int]]) -> None:
    """Health counters of an experiment's variants, {variant: (answers, fallbacks, errors)}, as an edge's batch
    brings them (model time all in the first bucket)."""
    from origin_sync.origin.sinks.sql import SQLiteEventSink
    from origin_sync.wire.health import BUCKETS

    rows = [
        {
            "experiment": experiment,
            "variant": variant,
            "region": "GB",
            "model_version": "m",
            "answers": answers,
            "fallbacks": fallbacks,
            "errors": errors,
            "model_ms": [answers - fallbacks] + [0] * (BUCKETS - 1),
        }
        for variant, (answers, fallbacks, errors) in counts.items()
    ]
    sink = SQLiteEventSink(events_db)
    asyncio.run(sink.write_health(uuid.uuid4().hex, rows))
    asyncio.run(sink.close())
