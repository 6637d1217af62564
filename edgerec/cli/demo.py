"""`edgerec demo`: train a model, start an origin and two regional edges on loopback, and show them at work."""

from __future__ import annotations

import hashlib
import json
import secrets
import shutil
import signal
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from edgerec.cli.process import Service, free_port, http_call
from edgerec.cli.services import edge_service, origin_service, publish_bundle, put_offer

DEMO_REGIONS = ("GB", "DE")
CURRENCY = {"GB": ("GBP", 1.0), "DE": ("EUR", 1.17)}
SHOPPERS_PER_REGION = 3
LATENCY_REQUESTS = 300


def _say(step: str) -> None:
    print(step, flush=True)


def offers_from_catalog(catalog: dict[str, Any], regions: tuple[str, ...]) -> list[dict[str, Any]]:
    """One offer per item and region where it sold, priced in the region's currency."""
    offers = []
    for code, item in catalog.items():
        for region in item.regions:
            if region not in regions or item.unit_price <= 0:
                continue
            currency, rate = CURRENCY[region]
            offers.append(
                {
                    "id": f"{region}-{code}",
                    "sku": code,
                    "title": item.description or code,
                    "price": round(item.unit_price * rate, 2),
                    "currency": currency,
                    "regions": [region],
                    "stock": 100,
                }
            )
    return offers


def demo_shoppers(events: Any, region: str, count: int, context_length: int) -> list[dict[str, Any]]:
    """The region's most active customers, as an edge sees them: an opaque id and recent purchase events."""
    in_region = events.region == region
    customers, counts = [], {}
    for cid in events.customer_id[in_region].tolist():
        counts[cid] = counts.get(cid, 0) + 1
    customers = sorted(counts, key=lambda c: (-counts[c], c))[:count]
    shoppers = []
    for cid in customers:
        skus = events.stock_code[events.customer_id == cid].tolist()[-context_length:]
        opaque = "s-" + hashlib.sha256(f"demo:{cid}".encode()).hexdigest()[:12]
        shoppers.append({"shopper_id": opaque, "region": region, "recent_items": skus, "k": 5})
    return shoppers


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


def _print_answer(shopper: dict[str, Any], answer: dict[str, Any], elapsed_ms: float) -> None:
    print(
        f"  shopper {shopper['shopper_id']} ({len(shopper['recent_items'])} recent purchases) "
        f"-> model {answer['model_version']}, data v{answer['data_version']}, {elapsed_ms:.1f} ms"
    )
    for offer in answer["offers"]:
        print(
            f"    {offer['score']:8.3f}  {offer['offer_id']:<16} {offer['price']:>8.2f} {offer['currency']}  "
            f"{offer['title'][:48]}"
        )


def _logged_under(service: Service, logs: Path) -> Service:
    """The service with its log file in `logs` (which the demo keeps), not under the work directory."""
    service.log_path = logs / service.log_path.name
    return service


def _stop_on_signal() -> threading.Event:
    """SIGINT and SIGTERM set the returned event from now on: installed before the demo says it serves, so a
    supervisor that signals as soon as it reads the lines stops the demo cleanly instead of interrupting it."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def run_demo(serve: bool = False, workdir: str | None = None) -> int:
    from models.data import item_catalog, purchase_events, read_transactions
    from models.synthetic import write_synthetic_transactions
    from models.train import train_bundle

    work = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="edgerec-demo-"))
    work.mkdir(parents=True, exist_ok=True)
    # The services' logs outlive the demo: in the work directory when one is given (kept), else in a directory of
    # their own in the system's temp directory (the rest of the temporary work directory is deleted at exit).
    logs = work / "logs" if workdir else Path(tempfile.mkdtemp(prefix="edgerec-demo-logs-"))
    logs.mkdir(parents=True, exist_ok=True)
    services: list[Service] = []
    try:
        _say(f"[1/6] generating a synthetic shop in the Online Retail format ({work})")
        data_path = write_synthetic_transactions(work / "transactions.csv.gz", seed=7)
        _say("[2/6] training the ranking model and exporting it to ONNX")
        manifest = train_bundle(data_path, work / "bundle", progress=True)
        _say(
            f"      model {manifest['version']}: {len(manifest['items'])} items, context length "
            f"{manifest['context_length']}"
        )

        _say("[3/6] starting the origin and publishing the model and offers")
        # Each region's edges get their own sync token; the origin signs with a key pair made under work/keys.
        admin_token = secrets.token_urlsafe(24)
        region_tokens = {r: secrets.token_urlsafe(24) for r in DEMO_REGIONS}
        origin = _logged_under(origin_service(work, free_port(), admin_token, region_tokens=region_tokens), logs)
        _say(
            "      rate limits are off in the demo: all of its requests come from this one loopback address, "
            "which the per-client limits of a deployment would throttle"
        )
        _say(f"      service logs: {logs} (kept after the demo exits)")
        services.append(origin.start())
        origin.wait_ready("/healthz")
        publish_bundle(origin.url, admin_token, work / "bundle", state="active")
        transactions = read_transactions(data_path)
        offers = offers_from_catalog(item_catalog(transactions), DEMO_REGIONS)
        for offer in offers:
            put_offer(origin.url, admin_token, offer)
        _say(f"      {len(offers)} offers in {', '.join(DEMO_REGIONS)}")

        _say("[4/6] starting one edge per region; each syncs a snapshot, then long-polls deltas")
        # One pseudonym key for the whole fleet, as in a deployment: events carry keyed hashes of shopper ids.
        pseudonym_key = secrets.token_urlsafe(24)
        edges = {
            r: _logged_under(
                edge_service(
                    work,
                    r,
                    free_port(),
                    origin.url,
                    region_tokens[r],
                    extra_env={"EDGEREC_PSEUDONYM_KEY": pseudonym_key},
                ),
                logs,
            )
            for r in DEMO_REGIONS
        }
        for edge in edges.values():
            services.append(edge.start())
        for edge in edges.values():
            edge.wait_ready("/readyz")

        _say("[5/6] recommendations per region")
        events = purchase_events(transactions)
        shoppers = {r: demo_shoppers(events, r, SHOPPERS_PER_REGION, manifest["context_length"]) for r in DEMO_REGIONS}
        first_answers = {}
        for region, edge in edges.items():
            print(f" edge {region} ({edge.url})")
            for shopper in shoppers[region]:
                answer, elapsed = recommend(edge, shopper)
                first_answers.setdefault(region, answer)
                _print_answer(shopper, answer, elapsed)

        _say("[6/6] changing an offer at the origin and watching the edges serve it")
        for region, edge in edges.items():
            top = first_answers[region]["offers"][0]
            offer = next(o for o in offers if o["id"] == top["offer_id"])
            changed = {**offer, "price": round(offer["price"] * 0.8, 2), "title": f"{offer['title'][:280]} (-20%)"}
            started = time.perf_counter()
            result = put_offer(origin.url, admin_token, changed)
            while True:
                answer, _ = recommend(edge, shoppers[region][0])
                served = next((o for o in answer["offers"] if o["offer_id"] == offer["id"]), None)
                if answer["data_version"] >= result["data_version"] and served is not None:
                    break
                if time.perf_counter() - started > 10:
                    raise RuntimeError(f"edge {region} did not serve data version {result['data_version']}")
                time.sleep(0.002)
            print(
                f"  {region}: {offer['id']} {offer['price']:.2f} -> {served['price']:.2f} {served['currency']} "
                f"served at data v{answer['data_version']} "
                f"{(time.perf_counter() - started) * 1000:.0f} ms after the admin call"
            )

        print(" latency, sequential keep-alive requests from this process (client-observed):")
        for region, edge in edges.items():
            lat = measure_latency(edge, shoppers[region], LATENCY_REQUESTS)
            print(
                f"  edge {region}: n={lat['n']} p50 {lat['p50_ms']:.2f} ms, p95 {lat['p95_ms']:.2f} ms, "
                f"p99 {lat['p99_ms']:.2f} ms, max {lat['max_ms']:.2f} ms"
            )

        if serve:
            stop = _stop_on_signal()
            print(f"origin {origin.url}")
            for region, edge in edges.items():
                print(f"edge {region} {edge.url}")
            print(f"admin-token {admin_token}", flush=True)
            print("serving until interrupted (Ctrl-C)", flush=True)
            while not stop.wait(0.5):
                pass
        print(f"demo finished; stopping services (their logs stay in {logs})", flush=True)
        return 0
    except (RuntimeError, TimeoutError, OSError) as exc:
        print(f"edgerec demo failed: {exc}", flush=True)
        for service in services:
            print(f"--- last lines of {service.name}'s log ({service.log_path}) ---\n{service.log_tail()}")
        return 1
    finally:
        for service in reversed(services):
            service.stop()
        if not workdir:
            shutil.rmtree(work, ignore_errors=True)
