"""The walk's scoring step: shoppers' requests that become ready in one pass of the event loop share one ONNX run,
and the breaker that sends answers to the fallback while the model is over its latency budget.

uvicorn parses every request that arrived in a pass of the loop and starts its task; each task takes its request
to its candidates and encoded context and waits here. The first one starts the batch, which gathers while each
pass of the loop brings more requests, for at most MAX_PASSES passes, then runs: one request at low load (the
wait added is two passes of the loop with nothing else to do, a few µs), more under saturation, where the per-run
costs of ORT (about 40 nodes), of summarising the batch's events (about 30 numpy calls) and cold caches are
shared. Under wrk on one worker of the 2-core machine, flushing in the very next pass gave 4.7 requests a run and
6,000-6,200 answers a second; gathering so, 14.3 and 8,270, at a lower p99 (`python -m benchmarks.scaling
--workers 1`, A/B).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import numpy as np
from msgspec import Struct

from edgerec.core.tracing import DISABLED, Tracing

from .traces import model_spans

log = logging.getLogger("edgerec.edge")

MAX_BATCH = 64  # bounds one run (about 1.5 ms on the 2-core machine at 200 candidates) and so the wait
MAX_PASSES = 4  # passes of the event loop a batch may gather requests in, while each pass brings more
# Why the model did not score a request (the answer then comes from the fallback and says this reason).
FALLBACK_MODEL_ERROR = "model_error"
FALLBACK_LATENCY_BUDGET = "latency_budget"


class ModelBreaker:
    """Sends requests to the popularity fallback for a while after the model overran its latency budget."""

    __slots__ = ("budget_s", "cooldown_s", "open_until")

    def __init__(self, budget_ms: float, cooldown_s: float) -> None:
        self.budget_s = budget_ms / 1000.0
        self.cooldown_s = cooldown_s
        self.open_until = 0.0

    def is_open(self, now: float) -> bool:
        return now < self.open_until

    def record(self, run_s: float, now: float) -> None:
        if run_s > self.budget_s:
            self.open_until = now + self.cooldown_s
            log.warning(
                "model run took %.1f ms, over its %.1f ms budget: fallback for %.1f s",
                run_s * 1000,
                self.budget_s * 1000,
                self.cooldown_s,
            )


class ScoreRequest(Struct, frozen=True):
    """One request's inputs to a model run."""

    model: Any  # models.runtime.Ranker
    context: Any  # models.runtime.RequestContext, encoded by that model
    region_index: int
    candidates: np.ndarray  # int64 [N]
    penalty: np.ndarray  # float32 [N]: the rule mask
    want: int  # how many ranked positions to ask for
    trace: Any = None  # the context of the request's answer span, when it is traced (edge_node.traces)


class Scores(Struct, frozen=True):
    """What the scoring step gives: the model's best `want` positions into the candidates with their scores, or,
    when the model could not score, why (`failure`, one of the FALLBACK_ reasons) and no scores."""

    scores: np.ndarray | None
    positions: np.ndarray | None
    model_s: float = 0.0
    failure: str | None = None
    batch_size: int = 0  # requests in the run that scored this one


MODEL_ERROR = Scores(None, None, failure=FALLBACK_MODEL_ERROR)
LATENCY_BUDGET = Scores(None, None, failure=FALLBACK_LATENCY_BUDGET)
NOTHING_TO_SCORE = Scores(np.empty(0, dtype=np.float32), np.empty(0, dtype=np.int64))


class InferenceBatcher:
    """Collects score requests and runs them per model, MAX_BATCH at a time, in one call_soon callback."""

    def __init__(
        self,
        breaker: ModelBreaker,
        inference_seconds: Any,
        batch_sizes: Any,
        max_batch: int = MAX_BATCH,
        tracing: Tracing = DISABLED,
        max_passes: int = MAX_PASSES,
    ) -> None:
        self.breaker = breaker
        self.tracing = tracing
        self.max_batch = max_batch
        self._inference = inference_seconds  # prometheus Histogram: seconds per run
        self._batch_sizes = batch_sizes  # prometheus Histogram: requests per run
        self._pending: list[tuple[ScoreRequest, asyncio.Future[Scores]]] = []
        self.max_passes = max_passes

    def submit(self, request: ScoreRequest) -> asyncio.Future[Scores]:
        """A future of the request's Scores, done once its run is (a failed run gives MODEL_ERROR); never raises.

        One future per request, not one per batch: cancelling a request's task cancels its future only."""
        loop = asyncio.get_running_loop()
        if not self._pending:
            loop.call_soon(self._gather, loop, 1, 0)
        waiter = loop.create_future()
        self._pending.append((request, waiter))
        return waiter

    def _gather(self, loop: asyncio.AbstractEventLoop, passes: int, seen: int) -> None:
        """Runs once a pass while the batch gathers (`seen`: its requests at the last call, 0 at the first): flushes
        when the last pass brought no request, when it has waited max_passes passes, or when it is full."""
        count = len(self._pending)
        if count > seen and passes < self.max_passes and count < self.max_batch:
            loop.call_soon(self._gather, loop, passes + 1, count)
        else:
            self._flush()

    def _flush(self) -> None:
        pending, self._pending = self._pending, []
        try:
            # One group unless an experiment's variant has its own model.
            by_model: dict[int, list[tuple[ScoreRequest, asyncio.Future[Scores]]]] = {}
            for entry in pending:
                by_model.setdefault(id(entry[0].model), []).append(entry)
            for group in by_model.values():
                for start in range(0, len(group), self.max_batch):
                    self._run(group[start : start + self.max_batch])
        except Exception:  # noqa: BLE001 - whatever happens here, no request may be left waiting
            log.exception("inference batch failed outside the model; answering from regional popularity")
        finally:
            for _, waiter in pending:
                if not waiter.done():  # left by a failure above, or a request whose task was cancelled meanwhile
                    waiter.set_result(MODEL_ERROR)

    def _run(self, group: list[tuple[ScoreRequest, asyncio.Future[Scores]]]) -> None:
        model = group[0][0].model
        # The run's span goes into each traced request's answer: one run, a child span in every trace it served.
        traced = [r.trace for r, _ in group if r.trace is not None] if self.tracing.enabled else None
        started_ns = time.time_ns() if traced else 0
        clock = time.perf_counter()
        try:
            results = model.rank_many(
                [(r.context, r.region_index, r.candidates, r.penalty) for r, _ in group], max(r.want for r, _ in group)
            )
        except Exception:  # noqa: BLE001 - any failure of the model must still leave the shoppers an answer
            if len(group) > 1:
                # Alone, each request gets its own chance: one request the model chokes on cannot fail the others.
                for entry in group:
                    self._run([entry])
                return
            log.exception("model %s failed; answering from regional popularity", getattr(model, "version", model))
            return  # the flush gives it MODEL_ERROR
        run_s = time.perf_counter() - clock
        size = len(group)
        if traced:
            attributes = {"edgerec.model_version": getattr(model, "version", ""), "edgerec.batch_size": size}
            model_spans(self.tracing, traced, started_ns, attributes)
        self.breaker.record(run_s, time.monotonic())
        self._inference.observe(run_s)
        if model.batched:
            self._batch_sizes.observe(size)
        else:  # a bundle from before batched graphs: rank_many ran the requests one by one
            for _ in group:
                self._batch_sizes.observe(1)
        for (request, waiter), (scores, positions) in zip(group, results):
            if not waiter.done():
                want = request.want
                waiter.set_result(Scores(scores[:want], positions[:want], run_s, None, size))
