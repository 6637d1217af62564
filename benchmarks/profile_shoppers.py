"""The profile mode's data: synthetic shoppers whose purchase histories are windows of real customers' histories,
the catalog of offers the edge holds, the origin import rows of those histories and the two request files (a
shopper id alone, or the same shopper's events as `recent_items`)."""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from .traffic import CURRENCIES, PATH

MAX_WINDOW = 64  # the profile's recent events: the hit path and recent_items then carry the same events


@dataclass(frozen=True)
class Shopper:
    shopper_id: str
    events: tuple[tuple[str, str, int], ...]  # (invoice, item, ts), oldest first


def real_histories(events: Any, region: str, known_items: set[str]) -> list[list[tuple[str, str, int]]]:
    """Each real customer's purchases in `region` (invoice, item, Unix seconds), oldest first, of the items the
    model knows; customers with at least two."""
    in_region = events.region == region
    by_customer: dict[int, list[tuple[str, str, int]]] = {}
    for cid, invoice, code, at in zip(
        events.customer_id[in_region].tolist(),
        events.invoice_no[in_region].tolist(),
        events.stock_code[in_region].tolist(),
        events.invoiced_at[in_region].astype("int64").tolist(),
    ):
        if code in known_items and 1 <= len(code) <= 64 and 0 <= at < 2**32:
            by_customer.setdefault(cid, []).append((invoice, code, at))
    return [sorted(h, key=lambda e: e[2]) for _, h in sorted(by_customer.items()) if len(h) >= 2]


def synthetic_shoppers(histories: list[list[tuple[str, str, int]]], count: int, seed: int = 19) -> list[Shopper]:
    """`count` shoppers, each a real customer's history up to a random point, its last MAX_WINDOW events at most:
    the real data has about 4,000 customers, so each lends its history (different windows of it) to many."""
    if not histories:
        raise RuntimeError("no customer with two purchases of known items in the region")
    rng = random.Random(seed)
    shoppers = []
    for i in range(count):
        history = rng.choice(histories)
        cut = rng.randint(1, len(history))
        window = tuple(history[max(0, cut - MAX_WINDOW) : cut])
        shoppers.append(Shopper(f"pb-{seed}-{i:07d}", window))
    return shoppers


def import_rows(shoppers: list[Shopper], key: bytes, region: str) -> Iterator[list[Any]]:
    """The rows `edgerec profiles import` sends (POST /v1/admin/profiles/import), grouped by shopper:
    [pseudonym, key, kind, item, ts, region]."""
    from origin_sync.wire.events import pseudonymize

    for shopper in shoppers:
        pseudonym = pseudonymize(key, shopper.shopper_id)
        seen = set()
        for invoice, item, ts in shopper.events:
            event_key = f"order:{invoice}:{item}"
            if event_key not in seen:  # one purchase per item per invoice, as the import folds them
                seen.add(event_key)
                yield [pseudonym, event_key, "purchase", item, ts, region]


def catalog_offers(
    candidates: list[dict[str, Any]], total: int, filler_region: str, skus: list[str]
) -> list[dict[str, Any]]:
    """The measured region's candidate offers plus filler offers (the model's SKUs, cycled) in `filler_region` up
    to `total` offers at the edge: the edge holds them all, a request ranks its own region's only."""
    currency, rate = CURRENCIES.get(filler_region, ("EUR", 1.17))
    filler = []
    for n in range(max(0, total - len(candidates))):
        sku = skus[n % len(skus)]
        filler.append(
            {
                "id": f"{filler_region}-F{n:07d}",
                "sku": sku,
                "title": f"catalog item {sku} variant {n // len(skus)}",
                "price": round(1.0 + (n % 997) * 0.05 * rate, 2),
                "currency": currency,
                "regions": [filler_region],
                "stock": 100,
            }
        )
    return candidates + filler


def _body_line(body: dict[str, Any]) -> str:
    return "\t".join(["POST", PATH, json.dumps(body, separators=(",", ":")), "Content-Type: application/json"])


def write_request_files(
    shoppers: list[Shopper], region: str, k: int, work: Path, lines: int = 4000, seed: int = 5
) -> dict[str, Path]:
    """Two wrk request files over the same sampled shoppers in the same order: `hit` sends the shopper id alone
    (the edge reads the profile), `request` the same shopper's purchases as `recent_items` with their ages (the
    profile is then not read)."""
    rng = random.Random(seed)
    sample = [rng.choice(shoppers) for _ in range(lines)]
    now = time.time()
    hit, request = [], []
    for shopper in sample:
        base = {"shopper_id": shopper.shopper_id, "region": region, "k": k}
        hit.append(_body_line(base))
        recent = [{"item": item, "age_days": round((now - ts) / 86400.0, 3)} for _, item, ts in shopper.events]
        request.append(_body_line({**base, "recent_items": recent}))
    paths = {"hit": work / "wrk-profile-hit.tsv", "request": work / "wrk-recent-items.tsv"}
    paths["hit"].write_text("\n".join(hit) + "\n")
    paths["request"].write_text("\n".join(request) + "\n")
    return paths
