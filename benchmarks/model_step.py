"""The edge's model step in process: Ranker.rank_many (stacking the batch, onnxruntime, splitting the answers)
against session.run alone on the same feeds, at the batch sizes the server forms under load.

    python -m benchmarks.model_step --bundle DIR [--batch 12] [--repeat 3] [--runs 2000]

Requests are recent-items contexts of lognormal length (median about 20 events, at most 200) over the bundle's
vocabulary, 200 candidates in each of three regions with a tenth excluded, k = 10. Prints µs per batch and per
request for both, and the difference: what the step costs outside onnxruntime.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from models.runtime import Ranker


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.model_step", description=__doc__.splitlines()[0])
    p.add_argument("--bundle", required=True, help="a bundle directory (edgerec model train --out DIR)")
    p.add_argument("--batch", type=int, default=12, help="requests a run (default 12, the peak's batches)")
    p.add_argument("--repeat", type=int, default=3, help="measurements (default 3)")
    p.add_argument("--runs", type=int, default=2000, help="runs a measurement (default 2000)")
    args = p.parse_args(argv)
    ranker = Ranker.load(args.bundle)
    items = ranker.manifest["items"]
    rng = np.random.default_rng(1)
    regions = (1, 2, 3)
    candidates = {r: np.sort(rng.choice(np.arange(1, len(items) + 1), 200, replace=False)) for r in regions}
    penalty = {r: np.where(rng.random(200) < 0.1, -np.inf, 0).astype(np.float32) for r in regions}

    def request() -> tuple:
        skus = [items[i] for i in rng.integers(0, len(items), int(min(200, rng.lognormal(3, 1) + 1)))]
        region = int(rng.choice(regions))
        return ranker.encode_context(skus), region, candidates[region], penalty[region]

    batches = [[request() for _ in range(args.batch)] for _ in range(64)]
    session, names = ranker._session, ranker._output_names  # noqa: SLF001 - the step's own session, timed alone
    feeds: list[dict] = []
    real_run = session.run
    session.run = lambda output_names, feed: feeds.append(feed) or real_run(output_names, feed)
    for batch in batches:
        ranker.rank_many(batch, 10)
    session.run = real_run

    def timed(step) -> float:
        started = time.perf_counter()
        for i in range(args.runs):
            step(i % len(batches))
        return (time.perf_counter() - started) / args.runs * 1e6

    for _ in range(args.repeat):
        step_us = timed(lambda i: ranker.rank_many(batches[i], 10))
        run_us = timed(lambda i: real_run(names, feeds[i]))
        b = args.batch
        print(
            f"batch {b}: rank_many {step_us:.1f} µs ({step_us / b:.1f} a request), session.run {run_us:.1f} µs "
            f"({run_us / b:.1f}), outside onnxruntime {(step_us - run_us) / b:.1f} µs a request",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
