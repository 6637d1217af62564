"""Where a profile hit's cost goes against the same events sent as `recent_items`, step by step in one process,
with the served bundle and the benchmark's shoppers: the store's part (pseudonym, memory tier read and decode), the
conversions of the record (`recent_events`, `history_profile`), the model's encoding of each, the body's parsing,
and a model run over a batch of each. Microseconds a request, the median of several passes over the sample."""

from __future__ import annotations

import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

PASSES = 5


def _per_call_us(fn: Callable[[Any], Any], inputs: list[Any]) -> float:
    passes = []
    for _ in range(PASSES):
        started = time.perf_counter()
        for x in inputs:
            fn(x)
        passes.append((time.perf_counter() - started) / len(inputs) * 1e6)
    return round(statistics.median(passes), 2)


def measure_breakdown(bundle: Path, shoppers: list[Any], files: dict[str, Path], sample: int = 1000) -> dict[str, Any]:
    from edge_node.profiles import EmbeddedProfileStore, ProfileCodec, ProfileEvent
    from edge_node.shoppers import HitInput, HitInputs, cart_of, history_profile, recent_events
    from edge_node.validation import parse_recommendation_request
    from models.runtime import Ranker
    from origin_sync.wire.events import pseudonym_key, pseudonymize

    model = Ranker.load(bundle)
    codec = ProfileCodec()
    chosen = shoppers[:sample]
    key = pseudonym_key("benchmark-breakdown")
    now = time.time()
    records = []
    for shopper in chosen:
        record = codec.empty()
        for _, item, ts in shopper.events:
            record = codec.apply(record, ProfileEvent("purchase", (item,), ts))
        records.append(record)
    encoded = [codec.encode(r) for r in records]
    pseudonyms = [pseudonymize(key, s.shopper_id) for s in chosen]

    async def store_gets(directory: str) -> float:
        store = EmbeddedProfileStore(Path(directory), "benchmark-breakdown", codec)
        for p, r in zip(pseudonyms, records):
            await store.put_summary(p, r, now)
        passes = []
        for _ in range(PASSES):
            started = time.perf_counter()
            for p in pseudonyms:
                await store.get(p)
            passes.append((time.perf_counter() - started) / len(pseudonyms) * 1e6)
        await store.close()
        return round(statistics.median(passes), 2)

    with tempfile.TemporaryDirectory() as directory:
        store_get = asyncio.run(store_gets(directory))
    histories = [history_profile(r, cart_of(r, now)) for r in records]
    contexts = [recent_events(r, now) for r in records]
    bodies = {
        kind: [line.split("\t")[2].encode() for line in path.read_text().splitlines()[:sample]]
        for kind, path in files.items()
    }
    length = model.context_length
    hit = {
        "parse_body": _per_call_us(lambda b: parse_recommendation_request(b, 100, 10, length), bodies["hit"]),
        "pseudonym": _per_call_us(lambda s: pseudonymize(key, s.shopper_id), chosen),
        "store_get": store_get,
        "decode_within_store_get": _per_call_us(codec.decode, encoded),
        "recent_events": _per_call_us(lambda r: recent_events(r, now), records),
        "history_profile": _per_call_us(lambda r: history_profile(r, cart_of(r, now)), records),
    }
    request = {
        "parse_body": _per_call_us(lambda b: parse_recommendation_request(b, 100, 10, length), bodies["request"]),
    }
    before: dict[str, float] = {}
    if model.reads_profiles:
        # The walk's hit (edge_node.serving.score): a shopper's first request builds its HitInput, a repeat one
        # (the same record, found by edge_node.shoppers.HitInputs) only encodes it at the request's time.
        before["history_profile"] = hit.pop("history_profile")
        before["encode_profile"] = _per_call_us(lambda h: model.encode_profile(h, now), histories)
        carts = [tuple(cart_of(r, now)) for r in records]
        hit["first_request_input"] = _per_call_us(
            lambda rc: HitInput(*rc).encode(model, now), list(zip(records, carts))
        )
        inputs = HitInputs(len(records))
        for r, c in zip(records, carts):
            inputs.get(r, c).encode(model, now)
        again = [(codec.decode(e), c) for e, c in zip(encoded, carts)]  # new, equal records, as a store read gives
        hit["repeat_request_input"] = _per_call_us(lambda rc: inputs.get(*rc).encode(model, now), again)
        hit_rows = [model.encode_profile(h, now) for h in histories]
    else:
        hit["encode"] = _per_call_us(lambda c: model.encode_context(c[0], ages_days=c[1]), contexts)
        hit_rows = [model.encode_context(c[0], ages_days=c[1]) for c in contexts]
    request["encode"] = _per_call_us(lambda c: model.encode_context(c[0], ages_days=c[1]), contexts)
    request_rows = [model.encode_context(c[0], ages_days=c[1]) for c in contexts]
    import numpy as np

    candidates = np.arange(1, 201, dtype=np.int64)  # 200 of the model's items, as a region's candidates
    penalty = np.zeros(len(candidates), dtype=np.float32)
    region = model.region_index("GB")

    def batches(rows: list[Any]) -> list[list[Any]]:
        return [[(r, region, candidates, penalty) for r in rows[i : i + 8]] for i in range(0, len(rows) - 7, 8)]

    hit["model_run_batch_of_8_per_request"] = round(
        _per_call_us(lambda b: model.rank_many(b, 10), batches(hit_rows)) / 8, 2
    )
    request["model_run_batch_of_8_per_request"] = round(
        _per_call_us(lambda b: model.rank_many(b, 10), batches(request_rows)) / 8, 2
    )
    steps = {k: v for k, v in hit.items() if k != "decode_within_store_get"}
    hit_total = round(sum(v for k, v in steps.items() if k != "repeat_request_input"), 2)
    repeat_total = round(sum(v for k, v in steps.items() if k != "first_request_input"), 2)
    before_total = round(sum(v for k, v in steps.items() if not k.endswith("_input")) + sum(before.values()), 2)
    request_total = round(sum(request.values()), 2)
    return {
        "sample": len(chosen),
        "model_reads_profiles": model.reads_profiles,
        "hit_us": hit,
        "request_us": request,
        "hit_before_us": before,
        "hit_total_us": hit_total,
        "hit_repeat_total_us": repeat_total,
        "hit_before_total_us": before_total,
        "request_total_us": request_total,
        "hit_extra_us": round(hit_total - request_total, 2),
        "hit_repeat_extra_us": round(repeat_total - request_total, 2),
        "note": "measured in the harness process (the load core, after the load runs), warm; inside the server the "
        "same work costs more (cold caches)",
        "profile_sizes": {
            "encoded_bytes_mean": round(sum(map(len, encoded)) / len(encoded), 1),
            "items_mean": round(sum(len(r.items) for r in records) / len(records), 2),
            "recent_mean": round(sum(len(r.recent) for r in records) / len(records), 2),
        },
    }


if __name__ == "__main__":  # python -m benchmarks.profile_breakdown BUNDLE: the same on synthetic windows of GB
    import sys

    from models.data import purchase_events, read_transactions

    from .profile_shoppers import real_histories, synthetic_shoppers, write_request_files

    bundle_dir = Path(sys.argv[1])
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    events = purchase_events(
        read_transactions(
            Path(sys.argv[2] if len(sys.argv) > 2 else "/work/shared/data/online_retail/transactions.csv.gz")
        )
    )
    people = synthetic_shoppers(real_histories(events, "GB", set(manifest["items"])), 2000)
    with tempfile.TemporaryDirectory() as work:
        print(
            json.dumps(
                measure_breakdown(bundle_dir, people, write_request_files(people, "GB", 10, Path(work))), indent=2
            )
        )
