"""Sync benchmark: an origin process and N edge syncers on loopback; how fast and how small changes travel.

    python -m benchmarks.sync --edges 20 --changes 200 --out DIR

Propagation: M offer changes are written at the origin one after another; for each, the time from sending the
admin call until every one of the N syncers (real `Syncer` instances, verifying signatures and the hash chain,
in this process) has applied it. Bytes: the wire size of a signed, compressed 10,000-offer snapshot and of the
delta batch for a one-offer change. Cold start: a real edge process until /readyz answers 200, from the origin
and from its disk copy with the origin down (which includes proving the whole copy against the signed state digest).
The state digest's own cost, in this process: recomputing it over the whole region (what a load from disk does) and
applying a one-offer batch with its digest check. Writes DIR/report.json, DIR/report.md and DIR/propagation.png.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from edgerec.cli.process import free_port
from edgerec.cli.services import edge_service, ensure_signing_keys, origin_service, publish_bundle
from origin_sync.origin.store import SQLiteStore
from origin_sync.replica import Replica, Syncer, apply_deltas
from origin_sync.wire import digest
from origin_sync.wire.protocol import PROTOCOL_VERSION, canonical, chain_hash
from origin_sync.wire.signing import Verifier

REGION = "GB"


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def _offer(i: int, sku: str, price: float = 9.99) -> dict[str, Any]:
    return {
        "id": f"{REGION}-{i:05d}",
        "sku": sku,
        "title": f"Benchmark offer {i} of item {sku}",
        "price": price,
        "currency": "GBP",
        "regions": [REGION],
        "stock": 10,
        "active_from": None,
        "active_to": None,
    }


async def _seed(db: Path, blobs: Path, skus: list[str], count: int) -> None:
    """Write the catalogue straight into the origin's database before it starts (fast, same code path)."""
    from origin_sync.wire.offers import validate_offer

    store = SQLiteStore(db, blobs)
    store._db.execute("PRAGMA synchronous=OFF")  # seeding only: the benchmark measures sync, not bulk load
    for i in range(count):
        await store.upsert_offer(validate_offer(_offer(i, skus[i % len(skus)])))
    await store.close()


def _bundle(out: Path, given: str | None) -> Path:
    if given:
        return Path(given)
    from models.synthetic import write_synthetic_transactions
    from models.train import train_bundle

    data = write_synthetic_transactions(out / "transactions.csv.gz", seed=7)
    train_bundle(data, out / "bundle", progress=False)
    return out / "bundle"


async def _propagation(
    origin_url: str, admin: str, token: str, verifier: Verifier, edges: int, changes: int, skus: list[str], offers: int
) -> tuple[list[float], list[Syncer]]:
    applied: dict[int, dict[int, float]] = {}

    def recorder(index: int):
        async def on_replica(replica: Replica, syncer: Syncer) -> None:
            applied.setdefault(replica.version, {})[index] = time.perf_counter()

        return on_replica

    syncers = [
        Syncer(
            origin_url=origin_url,
            regions=(REGION,),
            token=token,
            on_replica=recorder(i),
            verifier=verifier,
            wait_s=25.0,
        )
        for i in range(edges)
    ]
    tasks = [asyncio.create_task(s.run()) for s in syncers]
    deadline = time.monotonic() + 120
    while any(s.replica is None for s in syncers):
        if time.monotonic() > deadline:
            raise RuntimeError("syncers did not take their first snapshot")
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)  # every syncer parked in its long-poll
    results: list[float] = []
    headers = {"Authorization": f"Bearer {admin}"}
    async with aiohttp.ClientSession() as session:
        for n in range(changes):
            offer = _offer(n % offers, skus[n % len(skus)], price=round(10 + n * 0.01, 2))
            started = time.perf_counter()
            async with session.put(f"{origin_url}/v1/admin/offers/{offer['id']}", json=offer, headers=headers) as r:
                version = (await r.json())["data_version"]
            limit = time.monotonic() + 30
            while min(s.status.version for s in syncers) < version:
                if time.monotonic() > limit:
                    raise RuntimeError(f"change {version} did not reach every edge within 30 s")
                await asyncio.sleep(0.0005)
            done = max(applied.get(version, {}).values(), default=time.perf_counter())
            results.append((done - started) * 1000)
            await asyncio.sleep(0.02)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return results, syncers


def _bytes(origin_url: str, admin: str, token: str) -> dict[str, int]:
    from edgerec.cli.process import http_call, http_json

    auth = {"Authorization": f"Bearer {token}", "X-Edgerec-Protocol": str(PROTOCOL_VERSION)}
    status, _, snapshot = http_call(origin_url, "GET", f"/v1/sync/snapshot?regions={REGION}", headers=auth, timeout=60)
    assert status == 200
    status, body = http_json(origin_url, "GET", "/v1/admin/status", None, {"Authorization": f"Bearer {admin}"})
    head = body["data_version"]
    _, _, delta = http_call(
        origin_url, "GET", f"/v1/sync/deltas?regions={REGION}&since={head - 1}", headers=auth, timeout=60
    )
    return {"snapshot_bytes": len(snapshot), "delta_bytes_one_offer": len(delta)}


def _digest_costs(skus: list[str], offers: int, rounds: int = 200) -> dict[str, float]:
    """What the state digest costs an edge: O(state) at load, O(changed items) per applied batch."""
    from origin_sync.wire.offers import validate_offer

    catalogue = {o["id"]: o for o in (validate_offer(_offer(i, skus[i % len(skus)])) for i in range(offers))}
    started = time.perf_counter()
    replica = Replica(version=1, regions=(REGION,), offers=catalogue, model=None)  # computes the vector
    full_ms = (time.perf_counter() - started) * 1000
    timings = []
    for n in range(rounds):
        change = canonical(
            {"version": 2, "op": "offer_upsert", "offer": validate_offer(_offer(n % offers, skus[0], price=1.0 + n))}
        )
        after = chain_hash(replica.head_hash, change)
        batch = {
            "protocol": PROTOCOL_VERSION,
            "kind": "deltas",
            "regions": [REGION],
            "from": 1,
            "from_hash": replica.head_hash,
            "to": 2,
            "to_hash": after,
            "head": 2,
            "changes": [{"prev": replica.head_hash, "body": change}],
        }
        expected = apply_deltas(replica, batch).state_digest
        started = time.perf_counter()
        apply_deltas(replica, {**batch, "state_digest": expected})
        timings.append((time.perf_counter() - started) * 1e6)
    element = digest.offer_elements(next(iter(catalogue.values())))[0][1]
    started = time.perf_counter()
    for _ in range(rounds):
        digest.vector_of(element)
    return {
        "full_state_ms": round(full_ms, 1),
        "apply_one_offer_batch_us": round(statistics.median(timings), 1),
        "per_element_us": round((time.perf_counter() - started) / rounds * 1e6, 2),
    }


def _time_to_ready(service) -> float:
    started = time.perf_counter()
    service.start()
    service.wait_ready("/readyz", timeout_s=120)
    return (time.perf_counter() - started) * 1000


def _plot(path: Path, propagation: list[float], edges: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.plot(range(1, len(propagation) + 1), propagation, ".", markersize=3)
    left.axhline(250, color="red", linestyle="--", linewidth=1, label="target p99 250 ms")
    left.set_xlabel("change #")
    left.set_ylabel(f"ms until all {edges} edges applied it")
    left.legend()
    ordered = sorted(propagation)
    right.plot(ordered, [i / len(ordered) for i in range(1, len(ordered) + 1)])
    right.set_xlabel("propagation ms")
    right.set_ylabel("fraction of changes")
    right.set_title("CDF")
    fig.suptitle(f"edgerec sync: origin -> {edges} edges, loopback")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sync", description=__doc__.split("\n\n")[0])
    parser.add_argument("--edges", type=int, default=20)
    parser.add_argument("--changes", type=int, default=200)
    parser.add_argument("--offers", type=int, default=10_000, help="catalogue size of the region (default 10000)")
    parser.add_argument("--bundle", default=None, help="an existing model bundle (default: train a small one)")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="edgerec-sync-bench-"))
    print(f"workdir {work}", flush=True)
    bundle = _bundle(work, args.bundle)
    skus = json.loads((bundle / "manifest.json").read_text())["items"]
    print("state digest costs", flush=True)
    digest_costs = _digest_costs(skus, args.offers)
    print(f"seeding {args.offers} offers", flush=True)
    asyncio.run(_seed(work / "origin" / "origin.db", work / "origin" / "blobs", skus, args.offers))

    admin, token = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    origin = origin_service(work, free_port(), admin, region_tokens={REGION: token})
    verifier = Verifier.from_config(str(ensure_signing_keys(work)[1]))
    edge = edge_service(work, REGION, free_port(), origin.url, token)
    try:
        origin.start()
        origin.wait_ready("/healthz")
        publish_bundle(origin.url, admin, bundle, state="active")
        print("cold start from the origin", flush=True)
        from_origin_ms = _time_to_ready(edge)
        print(f"propagation: {args.edges} syncers, {args.changes} changes", flush=True)
        propagation, _ = asyncio.run(
            _propagation(origin.url, admin, token, verifier, args.edges, args.changes, skus, args.offers)
        )
        sizes = _bytes(origin.url, admin, token)
        # The edge process has followed every change and persisted the last one.
        edge.wait_ready("/readyz")
        time.sleep(1.0)
        edge.stop()
        origin.stop()
        print("cold start from disk with the origin down", flush=True)
        from_disk_ms = _time_to_ready(edge)
    finally:
        edge.stop()
        origin.stop()

    report = {
        "edges": args.edges,
        "changes": args.changes,
        "propagation_ms": {
            "p50": round(statistics.median(propagation), 2),
            "p90": round(_percentile(propagation, 90), 2),
            "p99": round(_percentile(propagation, 99), 2),
            "max": round(max(propagation), 2),
            "mean": round(statistics.fmean(propagation), 2),
        },
        "delta_bytes_one_offer": sizes["delta_bytes_one_offer"],
        "snapshot_bytes": sizes["snapshot_bytes"],
        "snapshot_offers": args.offers,
        "delta_to_snapshot_ratio": round(sizes["delta_bytes_one_offer"] / sizes["snapshot_bytes"], 5),
        "cold_start_ms": {"from_disk_origin_down": round(from_disk_ms, 1), "from_origin": round(from_origin_ms, 1)},
        "state_digest": digest_costs,
        "targets": {"propagation_p99_ms": 250, "delta_to_snapshot_ratio": 0.01, "cold_start_from_disk_ms": 1000},
        "setup": {
            "origin": "1 process, SQLite",
            "edges": "real Syncer instances in one process, verifying every payload; cold start: a real edge process",
            "host_cpus": __import__("os").cpu_count(),
            "python": sys.version.split()[0],
        },
    }
    (out / "report.json").write_text(json.dumps(report, indent=2))
    _plot(out / "propagation.png", propagation, args.edges)
    p = report["propagation_ms"]
    (out / "report.md").write_text(
        f"# edgerec sync benchmark\n\n"
        f"Origin (1 process, SQLite) and {args.edges} edge syncers on loopback, {args.changes} one-offer changes, "
        f"a {args.offers}-offer region. Host: {report['setup']['host_cpus']} CPUs.\n\n"
        f"| measure | value | target |\n|---|---|---|\n"
        f"| propagation to all edges p50 / p99 / max | {p['p50']} / {p['p99']} / {p['max']} ms | p99 ≤ 250 ms |\n"
        f"| one-offer delta batch | {report['delta_bytes_one_offer']} B | ≤ 1% of the snapshot |\n"
        f"| {args.offers}-offer snapshot (signed, zlib) | {report['snapshot_bytes']} B | |\n"
        f"| delta / snapshot | {report['delta_to_snapshot_ratio'] * 100:.3f} % | ≤ 1 % |\n"
        f"| cold start to ready, from disk, origin down | {report['cold_start_ms']['from_disk_origin_down']} ms "
        f"| ≤ 1000 ms |\n"
        f"| cold start to ready, from the origin | {report['cold_start_ms']['from_origin']} ms | |\n"
        f"| state digest over the whole region (at load) | {digest_costs['full_state_ms']} ms | |\n"
        f"| applying a one-offer batch, digest checked | {digest_costs['apply_one_offer_batch_us']} µs | |\n\n"
        f"Propagation is measured from sending the admin write until the last of the {args.edges} syncers has "
        f"verified (signature, hash chain) and applied the change. Cold start is a real `edgerec edge serve` "
        f"process, from spawn to `/readyz` 200 (includes the Python start-up, loading and golden-checking the ONNX "
        f"model and building the served state).\n\n![propagation](propagation.png)\n"
    )
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
