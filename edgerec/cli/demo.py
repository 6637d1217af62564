"""`edgerec demo`: train a model, start an origin and two regional edges on loopback, and show them at work."""

from __future__ import annotations

import secrets
import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from edgerec.cli.demo_shop import (
    anonymous_request,
    import_order_history,
    known_shoppers,
    measure_latency,
    offers_from_catalog,
    print_answer,
    recommend,
    shopper_request,
)
from edgerec.cli.process import Service, free_port
from edgerec.cli.services import edge_service, origin_service, publish_bundle, put_offer

DEMO_REGIONS = ("GB", "DE")
SHOPPERS_PER_REGION = 3
LATENCY_REQUESTS = 300


def _say(step: str) -> None:
    print(step, flush=True)


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

        _say("[3/6] starting the origin, publishing the model and offers, importing the shop's order history")
        # Each region's edges get their own sync token; the origin signs with a key pair made under work/keys.
        admin_token = secrets.token_urlsafe(24)
        region_tokens = {r: secrets.token_urlsafe(24) for r in DEMO_REGIONS}
        origin = _logged_under(origin_service(work, free_port(), admin_token, region_tokens=dict(region_tokens)), logs)
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
        # One pseudonym key for the whole fleet, as in a deployment: the import hashes each CustomerID with it on
        # this side (the origin never sees an id), and the edges hash a request's shopper_id the same way.
        pseudonym_key = secrets.token_urlsafe(24)
        settings = {
            "EDGEREC_ORIGIN_URL": origin.url,
            "EDGEREC_ADMIN_TOKEN": admin_token,
            "EDGEREC_PSEUDONYM_KEY": pseudonym_key,
        }
        _say(f"      edgerec profiles import --orders {data_path.name}: {import_order_history(data_path, settings)}")

        _say(
            "[4/6] starting one edge per region; each syncs a snapshot and its region's profiles, then long-polls "
            "deltas"
        )
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

        _say("[5/6] recommendations per region: the anonymous answer, then known shoppers by their id alone")
        events = purchase_events(transactions)
        shoppers = {r: known_shoppers(events, r, SHOPPERS_PER_REGION) for r in DEMO_REGIONS}
        requests = {r: [shopper_request(sid, r) for sid, _ in shoppers[r]] for r in DEMO_REGIONS}
        first_answers: dict[str, dict[str, Any]] = {}
        for region, edge in edges.items():
            print(f" edge {region} ({edge.url})")
            anonymous, elapsed = recommend(edge, anonymous_request(region))
            print_answer("anonymous", anonymous, elapsed)
            for (shopper_id, purchases), request in zip(shoppers[region], requests[region]):
                answer, elapsed = recommend(edge, request)
                if answer["profile"] != "hit":
                    raise RuntimeError(f"edge {region} holds no profile of shopper {shopper_id}: {answer['profile']}")
                first_answers.setdefault(region, answer)
                print_answer(f"shopper {shopper_id} ({purchases} purchases imported)", answer, elapsed, anonymous)

        _say("[6/6] changing an offer at the origin and watching the edges serve it")
        for region, edge in edges.items():
            top = first_answers[region]["offers"][0]
            offer = next(o for o in offers if o["id"] == top["offer_id"])
            changed = {**offer, "price": round(offer["price"] * 0.8, 2), "title": f"{offer['title'][:280]} (-20%)"}
            started = time.perf_counter()
            result = put_offer(origin.url, admin_token, changed)
            while True:
                answer, _ = recommend(edge, requests[region][0])
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
            lat = measure_latency(edge, requests[region], LATENCY_REQUESTS)
            print(
                f"  edge {region}: n={lat['n']} p50 {lat['p50_ms']:.2f} ms, p95 {lat['p95_ms']:.2f} ms, "
                f"p99 {lat['p99_ms']:.2f} ms, max {lat['max_ms']:.2f} ms"
            )

        if serve:
            stop = _stop_on_signal()
            print(f"origin {origin.url}")
            for region, edge in edges.items():
                print(f"edge {region} {edge.url}")
            print(f"admin-token {admin_token}")
            for region in DEMO_REGIONS:
                for shopper_id, _ in shoppers[region]:
                    print(f"shopper {region} {shopper_id}")
            # With these in the environment, `edgerec events erase --shopper ID` and `edgerec profiles export
            # --shopper ID` work against this demo.
            for name, value in settings.items():
                print(f"env {name} {value}", flush=True)
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
