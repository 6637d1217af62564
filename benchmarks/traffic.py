"""Benchmark traffic: regional offers and shopper requests drawn from real purchase histories.

The harness builds one traffic file per run (`build_traffic`) and the locustfile reads it; the same
file feeds wrk's request list, so every load generator sends the same mix.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlencode

from edgerec.cli.demo_shop import region_offer

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data" / "online_retail" / "transactions.csv.gz"

DEFAULT_REGIONS = ("GB", "DE", "FR")
CURRENCIES = {
    "GB": ("GBP", 1.0),
    "IE": ("EUR", 1.17),
    "DE": ("EUR", 1.17),
    "FR": ("EUR", 1.17),
    "ES": ("EUR", 1.17),
    "NL": ("EUR", 1.17),
}
# Carousel sizes a storefront asks for, with how often: most widgets show 8-12 tiles.
K_WEIGHTS = {4: 0.10, 6: 0.10, 8: 0.20, 10: 0.30, 12: 0.15, 20: 0.10, 40: 0.05}
DEVICES = {"mobile": 0.55, "desktop": 0.35, "tablet": 0.05, "app": 0.05}
GEO_HEADER = "CloudFront-Viewer-Country"
SECRET_HEADER = "X-Edgerec-CDN-Secret"
PEER_MODEL = "recommender"
# The peers' request bodies: "peer" as MLServer's users send them, "peer_padded" as a client of a model with
# dynamic batching sends them (Triton merges only requests whose tensors have the same shapes).
PEER_KINDS = ("peer", "peer_padded")
PATH = "/v1/recommendations"


@dataclass(frozen=True)
class Contract:
    """What the edge under test understands, found by probing it (the anonymous GET may not exist yet)."""

    anonymous_get: bool  # GET /v1/recommendations answers (CDN-cacheable form)
    geo_header: bool  # the region may come from the geo header instead of the body/query

    def to_json(self) -> dict[str, bool]:
        return {"anonymous_get": self.anonymous_get, "geo_header": self.geo_header}


def resolve_data(choice: str) -> tuple[Path | None, str]:
    """(CSV path or None for synthetic, a label for the report) from --data: auto, synthetic or a path."""
    if choice == "synthetic":
        return None, "synthetic (models.synthetic, seed 7)"
    if choice == "auto":
        if SHARED_DATA.is_file():
            return SHARED_DATA, f"Online Retail ({SHARED_DATA})"
        return None, "synthetic (models.synthetic, seed 7; shared Online Retail data not found)"
    path = Path(choice)
    if not path.is_file():
        raise FileNotFoundError(f"--data {choice}: no such file")
    return path, str(path)


def _popular_items(events: Any, region: str) -> list[str]:
    counts = Counter(events.stock_code[events.region == region].tolist())
    return [code for code, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]


def regional_offers(
    transactions: Any, events: Any, regions: tuple[str, ...], per_region: int, known_items: set[str]
) -> list[dict[str, Any]]:
    """The `per_region` best-selling items of each region (that the model knows), as priced offers."""
    from models.data import item_catalog

    catalog = item_catalog(transactions)
    offers = []
    for region in regions:
        currency, rate = CURRENCIES.get(region, ("EUR", 1.17))
        chosen = [
            c for c in _popular_items(events, region) if c in known_items and c in catalog and catalog[c].unit_price > 0
        ][:per_region]
        offers.extend(region_offer(region, code, catalog[code], currency, rate) for code in chosen)
    return offers


def shopper_histories(
    events: Any, region: str, context_length: int, count: int, rng: random.Random
) -> list[dict[str, Any]]:
    """Requests of returning shoppers: a real customer's purchases up to a random point of their history."""
    in_region = events.region == region
    customers = events.customer_id[in_region].tolist()
    codes = events.stock_code[in_region].tolist()
    by_customer: dict[int, list[str]] = {}
    for cid, code in zip(customers, codes):  # events are sorted by customer, then time
        by_customer.setdefault(cid, []).append(code)
    eligible = sorted(c for c, items in by_customer.items() if len(items) >= 2)
    if not eligible:
        return []
    requests = []
    for _ in range(count):
        cid = rng.choice(eligible)
        items = by_customer[cid]
        cut = rng.randint(1, len(items))
        recent = items[max(0, cut - context_length) : cut]
        request: dict[str, Any] = {
            "shopper_id": "s-" + hashlib.sha256(f"bench:{cid}".encode()).hexdigest()[:16],
            "recent_items": recent,
            "context": {"device": _weighted(rng, DEVICES)},
        }
        if rng.random() < 0.2:
            # Items already in the basket are excluded by the storefront.
            request["exclude"] = [f"{region}-{code}" for code in recent[-rng.randint(1, 3) :]]
        requests.append(request)
    return requests


def _weighted(rng: random.Random, weights: dict[Any, float]) -> Any:
    return rng.choices(list(weights), weights=list(weights.values()))[0]


def region_weights(regions: tuple[str, ...]) -> dict[str, float]:
    """The first region carries half the traffic, the others share the rest (a home market and neighbours)."""
    if len(regions) == 1:
        return {regions[0]: 1.0}
    rest = 0.5 / (len(regions) - 1)
    return {r: (0.5 if i == 0 else rest) for i, r in enumerate(regions)}


def build_traffic(
    transactions: Any,
    regions: tuple[str, ...],
    context_length: int,
    anonymous_share: float,
    per_region: int = 1000,
    seed: int = 11,
) -> dict[str, Any]:
    """The traffic description the locustfile and wrk read: returning-shopper pools per region and the mix."""
    from models.data import purchase_events

    rng = random.Random(seed)
    events = purchase_events(transactions)
    returning = {r: shopper_histories(events, r, context_length, per_region, rng) for r in regions}
    return {
        "regions": region_weights(regions),
        "anonymous_share": anonymous_share,
        "k_weights": {str(k): w for k, w in K_WEIGHTS.items()},
        "returning": returning,
        "seed": seed,
    }


def save_traffic(path: Path, traffic: dict[str, Any]) -> None:
    path.write_text(json.dumps(traffic))


def load_traffic(path: str | Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


@dataclass(frozen=True)
class HttpRequest:
    """One request as a load generator sends it."""

    kind: str  # "anonymous" or "returning"
    method: str
    path: str
    headers: dict[str, str]
    body: bytes | None


class RequestMix:
    """Draws requests for one target kind from the traffic description.

    target: "edgerec" (and "ceiling", which answers anything): the edge's API, with the CDN's
    headers as the CDN would forward them; "cdn": anonymous GETs only, as browsers send them to
    the CDN (the geo header stands in for the CDN's own geo lookup); "peer": the same shoppers in
    the peer model servers' protocol (KServe V2 / Open Inference Protocol), one body for MLServer and Triton.
    """

    def __init__(
        self, traffic: dict[str, Any], target: str, contract: Contract, cdn_secret: str, seed: int | None = None
    ) -> None:
        self.target = target
        self.contract = contract
        self.cdn_secret = cdn_secret
        self.rng = random.Random(seed)
        self.regions = list(traffic["regions"])
        self.region_w = list(traffic["regions"].values())
        self.anonymous_share = 1.0 if target == "cdn" else float(traffic["anonymous_share"])
        self.ks = [int(k) for k in traffic["k_weights"]]
        self.k_w = list(traffic["k_weights"].values())
        self.returning = {r: traffic["returning"].get(r) or [] for r in self.regions}

    def next(self) -> HttpRequest:
        rng = self.rng
        region = rng.choices(self.regions, weights=self.region_w)[0]
        k = rng.choices(self.ks, weights=self.k_w)[0]
        pool = self.returning[region]
        if rng.random() < self.anonymous_share or not pool:
            return self.anonymous(region, k)
        return self.returning_shopper(region, k, rng.choice(pool))

    def _edge_headers(self, region: str) -> dict[str, str]:
        # What the CDN adds on its way to the edge: the viewer's country and the shared secret.
        return {GEO_HEADER: region, SECRET_HEADER: self.cdn_secret}

    def anonymous(self, region: str, k: int) -> HttpRequest:
        if self.target in PEER_KINDS:
            return self._peer(region, k, [], [], "anonymous")
        if self.target == "cdn":
            query = {"k": k} if self.contract.geo_header else {"region": region, "k": k}
            return HttpRequest("anonymous", "GET", f"{PATH}?{urlencode(query)}", {GEO_HEADER: region}, None)
        headers = self._edge_headers(region)
        if self.contract.anonymous_get:
            query = {"k": k} if self.contract.geo_header else {"region": region, "k": k}
            return HttpRequest("anonymous", "GET", f"{PATH}?{urlencode(query)}", headers, None)
        body = {"k": k} if self.contract.geo_header else {"region": region, "k": k}
        return HttpRequest(
            "anonymous",
            "POST",
            PATH,
            {**headers, "Content-Type": "application/json"},
            json.dumps(body, separators=(",", ":")).encode(),
        )

    def returning_shopper(self, region: str, k: int, shopper: dict[str, Any]) -> HttpRequest:
        if self.target in PEER_KINDS:
            return self._peer(region, k, shopper["recent_items"], shopper.get("exclude", []), "returning")
        body = {**shopper, "k": k}
        if not self.contract.geo_header:
            body["region"] = region
        return HttpRequest(
            "returning",
            "POST",
            PATH,
            {**self._edge_headers(region), "Content-Type": "application/json"},
            json.dumps(body, separators=(",", ":")).encode(),
        )

    def _peer(self, region: str, k: int, recent: list[str], exclude: list[str], kind: str) -> HttpRequest:
        # Open Inference Protocol JSON that both peers take: each tensor a batch of one ([1, n]), as Triton wants
        # for a model with dynamic batching (MLServer's StringCodec reads it too), and the optional lists left out
        # when empty (PyTriton 0.7 cannot pass an empty BYTES tensor to its inference function).
        if self.target == "peer_padded":  # always both lists, each in one of a few shapes: batches can form
            recent, exclude = bucket_padded(recent), bucket_padded(exclude)
        inputs = [
            {"name": "region", "shape": [1, 1], "datatype": "BYTES", "data": [region]},
            {"name": "k", "shape": [1, 1], "datatype": "INT64", "data": [k]},
        ]
        if recent:
            inputs.insert(0, {"name": "recent_items", "shape": [1, len(recent)], "datatype": "BYTES", "data": recent})
        if exclude:
            inputs.append({"name": "exclude", "shape": [1, len(exclude)], "datatype": "BYTES", "data": exclude})
        body = json.dumps({"inputs": inputs}, separators=(",", ":")).encode()
        return HttpRequest(kind, "POST", f"/v2/models/{PEER_MODEL}/infer", {"Content-Type": "application/json"}, body)

    def sample(self, count: int) -> Iterator[HttpRequest]:
        for _ in range(count):
            yield self.next()


def bucket_padded(values: list[str]) -> list[str]:
    """values left-padded with "" (which the peers read as padding) to the next power of two, at least one: a few
    shapes for Triton's batcher to merge, none of them empty."""
    width = 1 << max(0, len(values) - 1).bit_length()
    return [""] * (width - len(values)) + values
