"""Server-side time of a profile hit against the same history sent as recent_items, on one real edge, sequential
requests (the Server-Timing total): `python scripts/profile_hit_latency.py BUNDLE_DIR EVENTS [--requests N]`.
A quick check, not a benchmark: the latency benchmark's profile mode is the measurement of record."""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from edgerec.cli.process import http_call, http_json
from edgerec.cli.services import Cluster

OFFERS = 200


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("bundle", type=Path)
    parser.add_argument("events", type=int, help="purchase events the shopper's profile learns first")
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    cluster = Cluster(Path(tempfile.mkdtemp(prefix="profile-hit-")), args.bundle)
    cluster.start_origin()
    try:
        skus = json.loads((args.bundle / "manifest.json").read_text())["items"][:OFFERS]
        cluster.publish()
        offer = {"title": "item", "price": 9.99, "currency": "GBP", "regions": ["GB"], "stock": 10}
        cluster.put_offers([{"id": f"GB-{sku}", "sku": sku, **offer} for sku in skus])
        edge = cluster.start_edge("GB")
        cluster.wait_for_version(1, {"GB": len(skus)})
        _, first = http_json(edge.url, "POST", "/v1/recommendations", {"shopper_id": "bench", "region": "GB"})
        bought = [skus[(i * 7) % len(skus)] for i in range(args.events)]
        for sku in bought:
            event = {"type": "purchase", "request_id": first["request_id"], "offer_ids": [f"GB-{sku}"]}
            event.update(value=1.0, currency="GBP", shopper_id="bench")
            assert http_json(edge.url, "POST", "/v1/events", {"events": [event]})[0] == 202

        def total_ms(body: dict) -> float:
            status, headers, _ = http_call(
                edge.url, "POST", "/v1/recommendations", json.dumps(body).encode(), {"Content-Type": "application/json"}
            )
            assert status == 200
            return float(headers["server-timing"].split("total;dur=")[1])

        cases = [
            ("hit", {"shopper_id": "bench", "region": "GB"}),
            ("request", {"region": "GB", "recent_items": bought}),
        ]
        for label, body in cases * 2:  # alternated: the machine is noisy
            times = sorted(total_ms(body) for _ in range(args.requests))
            p90 = times[int(len(times) * 0.9)]
            print(f"{label:8s} events={args.events} median {statistics.median(times):.3f} ms p90 {p90:.3f} ms")
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
