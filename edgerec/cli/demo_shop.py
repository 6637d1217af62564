"""The demo's shop as its services see it: offers from the synthetic catalog, its order history imported at the
origin with `edgerec profiles import`, the shoppers it knows by id, and the requests it sends to the edges."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from edgerec.cli.process import Service, http_call

CURRENCY = {"GB": ("GBP", 1.0), "DE": ("EUR", 1.17)}
# What the demo hands a person (and `edgerec profiles import`) to run the admin commands against it: the names the
# command line reads (edgerec/cli/admin.py: --origin's default, the admin token, the pseudonym key).
ADMIN_ENV = ("EDGEREC_ORIGIN_URL", "EDGEREC_ADMIN_TOKEN", "EDGEREC_PSEUDONYM_KEY")


def offers_from_catalog(catalog: dict[str, Any], regions: tuple[str, ...]) -> list[dict[str, Any]]:
    """One offer per item and region where it sold, priced in the region's currency."""
    offers = []
    for code, item in catalog.items():
        for region in item.regions:
            if region not in regions or item.unit_price <= 0:
                continue
            offers.append(region_offer(region, code, item, *CURRENCY[region]))
    return offers


def region_offer(region: str, code: str, item: Any, currency: str, rate: float) -> dict[str, Any]:
    """An item of models.data's catalog as one region's offer, its price converted at `rate` into `currency`."""
    return {
        "id": f"{region}-{code}",
        "sku": code,
        "title": item.description or code,
        "price": round(item.unit_price * rate, 2),
        "currency": currency,
        "regions": [region],
        "stock": 100,
    }


def admin_env(settings: dict[str, str]) -> dict[str, str]:
    """This process's environment with the demo's admin settings in place of any of the caller's own (a `_FILE`
    variant of one would be refused beside it)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EDGEREC_ADMIN_TOKEN", "EDGEREC_PSEUDONYM_KEY"))}
    return {**env, **settings}


def import_order_history(orders: Path, settings: dict[str, str]) -> str:
    """`edgerec profiles import --orders FILE` against the demo's origin, as an admin runs it: the shop's order
    history becomes the shoppers' profile summaries, which the origin signs and syncs to their regions' edges.
    Returns the command's report line."""
    try:
        result = subprocess.run(
            [sys.executable, "-m", "edgerec", "profiles", "import", "--orders", str(orders), "--no-progress"],
            capture_output=True,
            text=True,
            timeout=300,
            env=admin_env(settings),
        )
    except subprocess.TimeoutExpired:
        raise RuntimeError("edgerec profiles import did not finish in 300 s") from None
    if result.returncode != 0:
        raise RuntimeError(f"edgerec profiles import failed ({result.returncode}): {result.stderr.strip()[-500:]}")
    return result.stdout.strip()


def known_shoppers(events: Any, region: str, count: int) -> list[tuple[str, int]]:
    """The region's `count` most active customers in the order history (`models.data.purchase_events`, what the
    import sends), each as (the id the shop knows them by, their CustomerID: what the import and the edges hash;
    their purchase events in the history)."""
    counts: dict[int, int] = {}
    for cid in events.customer_id[events.region == region].tolist():
        counts[cid] = counts.get(cid, 0) + 1
    chosen = sorted(counts, key=lambda c: (-counts[c], c))[:count]
    return [(str(c), int((events.customer_id == c).sum())) for c in chosen]


def shopper_request(shopper_id: str, region: str, k: int = 5) -> dict[str, Any]:
    """A personalized request as a shop sends it: the shopper's id and nothing of their history; the edge finds
    their profile."""
    return {"shopper_id": shopper_id, "region": region, "k": k}


def anonymous_request(region: str, k: int = 5) -> dict[str, Any]:
    return {"region": region, "k": k}


def recommend(edge: Service, request: dict[str, Any]) -> tuple[dict[str, Any], float]:
    started = time.perf_counter()
    status, _, raw = http_call(
        edge.url, "POST", "/v1/recommendations", json.dumps(request).encode(), {"Content-Type": "application/json"}
    )
    elapsed_ms = (time.perf_counter() - started) * 1000
    if status != 200:
        raise RuntimeError(f"{edge.name} answered HTTP {status}: {raw[:300]!r}")
    return json.loads(raw), elapsed_ms


def measure_latency(edge: Service, requests: list[dict[str, Any]], count: int) -> dict[str, float]:
    """Sequential requests over one keep-alive connection: the latency a shopper's request sees end to end."""
    import http.client

    conn = http.client.HTTPConnection(f"127.0.0.1:{edge.port}", timeout=10)
    bodies = [json.dumps(r).encode() for r in requests]
    samples = []
    try:
        for i in range(count):
            started = time.perf_counter()
            conn.request(
                "POST",
                "/v1/recommendations",
                body=bodies[i % len(bodies)],
                headers={"Content-Type": "application/json"},
            )
            resp = conn.getresponse()
            resp.read()
            samples.append((time.perf_counter() - started) * 1000)
            if resp.status != 200:
                raise RuntimeError(f"{edge.name} answered HTTP {resp.status} during the latency run")
    finally:
        conn.close()
    samples.sort()
    q = statistics.quantiles(samples, n=100)
    return {"n": len(samples), "p50_ms": q[49], "p95_ms": q[94], "p99_ms": q[98], "max_ms": samples[-1]}


def offer_ids(answer: dict[str, Any]) -> list[str]:
    return [o["offer_id"] for o in answer["offers"]]


def print_answer(who: str, answer: dict[str, Any], elapsed_ms: float, anonymous: dict[str, Any] | None = None) -> None:
    """The answer's header line (who asked, the profile indicator, versions, time; beside the anonymous answer,
    how it differs) and one line per offer."""
    versus = ""
    if anonymous is not None:
        new = len(set(offer_ids(answer)) - set(offer_ids(anonymous)))
        versus = (
            "; same offers as the anonymous answer"
            if offer_ids(answer) == offer_ids(anonymous)
            else f"; differs from the anonymous answer ({new} of its {len(answer['offers'])} offers not in it)"
        )
    print(
        f"  {who} -> profile {answer['profile']}, model {answer['model_version']}, data v{answer['data_version']}, "
        f"{elapsed_ms:.1f} ms{versus}"
    )
    for offer in answer["offers"]:
        print(
            f"    {offer['score']:8.3f}  {offer['offer_id']:<16} {offer['price']:>8.2f} {offer['currency']}  "
            f"{offer['title'][:48]}"
        )
