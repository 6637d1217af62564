"""The edge's model step in process: Ranker.rank_many (building the batch's feeds, onnxruntime, splitting the
answers) against session.run alone on the same feeds, at the batch sizes the server forms under load; with --ab, for
the bundle's graph and the other layout of the same model (ragged and padded), in interleaved rounds.

    python -m benchmarks.model_step --bundle DIR [--batch 12] [--repeat 3] [--runs 2000] [--ab]

Requests are recent-items contexts of lognormal length (median about 20 events, at most 200) over the bundle's
vocabulary, 200 candidates in each of three regions with a tenth excluded, k = 10. Prints µs per batch and per
request for both, and the difference: what the step costs outside onnxruntime. With --ab it first checks that both
graphs give the same answers on every batch, and ends with the medians over rounds and the median of each round's
ragged/padded ratio (rounds alternate which graph goes first: the machine's noise falls on both). With --encode,
for a ragged bundle, the step from the requests' item codes instead: each request's events summarised alone
(encode_context, as the edge did before 2026-12-04) against the batch summarising all of them (request_context),
in interleaved rounds, after checking that both give the same answers.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import onnx
import onnxruntime
from onnx import numpy_helper

from models.bundle import read_bundle
from models.export import ranking_graph
from models.runtime import Ranker, _session_options


def _layout(ranker: Ranker) -> str:
    return "ragged" if ranker.ragged else "padded"


def _other_layout(bundle: str, ranker: Ranker) -> Ranker:
    """The bundle's model as the other graph (built from its tables), with its manifest (not golden-checked here:
    the benchmark compares the answers itself)."""
    onnx_bytes, _ = read_bundle(bundle)
    tables = {t.name: numpy_helper.to_array(t) for t in onnx.load_from_string(onnx_bytes).graph.initializer}
    graph = ranking_graph(tables, ragged=not ranker.ragged).SerializeToString()
    session = onnxruntime.InferenceSession(graph, sess_options=_session_options(), providers=["CPUExecutionProvider"])
    return Ranker(session, ranker.manifest)


def _captured_feeds(ranker: Ranker, batches: list[list[tuple]]) -> list[dict]:
    """The feeds rank_many gives session.run for each batch."""
    session = ranker._session  # noqa: SLF001 - the step's own session, timed alone
    feeds: list[dict] = []
    real_run = session.run
    session.run = lambda output_names, feed: feeds.append(feed) or real_run(output_names, feed)
    for batch in batches:
        ranker.rank_many(batch, 10)
    session.run = real_run
    return feeds


def _check_same_answers(rankers: list[Ranker], batches: list[list[tuple]]) -> None:
    worst, same = 0.0, True
    for batch in batches:
        one, other = (ranker.rank_many(batch, 10) for ranker in rankers)
        for (_, _, candidates, _), (scores, positions), (other_scores, other_positions) in zip(batch, one, other):
            worst = max(worst, float(np.max(np.abs(scores - other_scores), initial=0.0)))
            same = same and np.array_equal(candidates[positions], candidates[other_positions])
    print(f"answers: same ranking on every request: {same}; largest score difference {worst:.2g}", flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.model_step", description=__doc__.splitlines()[0])
    p.add_argument("--bundle", required=True, help="a bundle directory (edgerec model train --out DIR)")
    p.add_argument("--batch", type=int, default=12, help="requests a run (default 12, the peak's batches)")
    p.add_argument("--repeat", type=int, default=3, help="measurements, or rounds with --ab (default 3)")
    p.add_argument("--runs", type=int, default=2000, help="runs a measurement (default 2000)")
    p.add_argument("--ab", action="store_true", help="also time the other graph layout of the same model")
    p.add_argument("--encode", action="store_true", help="time the events' summary per request against per batch")
    args = p.parse_args(argv)
    ranker = Ranker.load(args.bundle)
    if args.encode:
        return _encode_ab(ranker, args)
    rankers = [ranker, _other_layout(args.bundle, ranker)] if args.ab else [ranker]
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
    if args.ab:
        _check_same_answers(rankers, batches)
    feeds = [_captured_feeds(r, batches) for r in rankers]

    def timed(step) -> float:
        started = time.perf_counter()
        for i in range(args.runs):
            step(i % len(batches))
        return (time.perf_counter() - started) / args.runs * 1e6

    b = args.batch
    measured: dict[str, dict[str, list[float]]] = {_layout(r): {"step": [], "run": []} for r in rankers}
    for round_number in range(args.repeat):
        order = list(zip(rankers, feeds))
        for r, own_feeds in order if round_number % 2 == 0 else order[::-1]:
            session, names = r._session, r._output_names  # noqa: SLF001
            step_us = timed(lambda i: r.rank_many(batches[i], 10))
            run_us = timed(lambda i: session.run(names, own_feeds[i]))
            measured[_layout(r)]["step"].append(step_us)
            measured[_layout(r)]["run"].append(run_us)
            print(
                f"{_layout(r)} batch {b}: rank_many {step_us:.1f} µs ({step_us / b:.1f} a request), session.run "
                f"{run_us:.1f} µs ({run_us / b:.1f}), outside onnxruntime {(step_us - run_us) / b:.1f} µs a request",
                flush=True,
            )
    if args.ab:
        for layout, times in measured.items():
            step, run = (statistics.median(times[key]) for key in ("step", "run"))
            print(
                f"median of {args.repeat} rounds, {layout}: rank_many {step:.1f} µs ({step / b:.1f} a request), "
                f"session.run {run:.1f} µs ({run / b:.1f}), outside {(step - run) / b:.1f} µs a request"
            )
        for key, what in (("step", "rank_many"), ("run", "session.run")):
            ratios = [r / p for r, p in zip(measured["ragged"][key], measured["padded"][key])]
            print(f"{what} ragged/padded, median of the rounds' ratios: {statistics.median(ratios):.3f}")
    return 0


def _encode_ab(ranker: Ranker, args: argparse.Namespace) -> int:
    if not ranker.ragged:
        raise SystemExit("--encode needs a ragged bundle (edgerec model train since 2026-12-04)")
    items = ranker.manifest["items"]
    rng = np.random.default_rng(1)
    candidates = np.sort(rng.choice(np.arange(1, len(items) + 1), 200, replace=False))
    penalty = np.where(rng.random(200) < 0.1, -np.inf, 0).astype(np.float32)
    batches = [
        [
            [items[i] for i in rng.integers(0, len(items), int(min(200, rng.lognormal(3, 1) + 1)))]
            for _ in range(args.batch)
        ]
        for _ in range(64)
    ]
    ways = {"per request": ranker.encode_context, "per batch": ranker.request_context}

    def step(encode, skus_batch: list[list[str]]) -> list:
        return ranker.rank_many([(encode(skus), 1, candidates, penalty) for skus in skus_batch], 10)

    for skus_batch in batches:
        alone, together = (step(encode, skus_batch) for encode in ways.values())
        for (a_scores, a_positions), (t_scores, t_positions) in zip(alone, together):
            if not (np.array_equal(a_positions, t_positions) and np.allclose(a_scores, t_scores, atol=1e-5)):
                raise SystemExit("the two summaries give different answers")
    print("answers: the same on every request of 64 batches", flush=True)
    measured: dict[str, list[float]] = {name: [] for name in ways}
    for round_number in range(args.repeat):
        order = list(ways.items())
        for name, encode in order if round_number % 2 == 0 else order[::-1]:
            started = time.perf_counter()
            for i in range(args.runs):
                step(encode, batches[i % len(batches)])
            us = (time.perf_counter() - started) / args.runs * 1e6
            measured[name].append(us)
            print(f"{name}: {us:.1f} µs a batch of {args.batch}, {us / args.batch:.1f} a request", flush=True)
    ratios = [b / r for b, r in zip(measured["per batch"], measured["per request"])]
    print(f"per batch / per request, median of the rounds' ratios: {statistics.median(ratios):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
