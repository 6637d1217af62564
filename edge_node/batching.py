"""Shoppers' requests that become ready in one pass of the event loop share one ONNX run.

uvicorn parses every request that arrived in a pass of the loop and starts its task; each task plans its
request (rules, encoded context) and waits here. The first one schedules a flush with call_soon, which runs
after all the tasks of that pass, so a batch holds exactly the requests that were ready together: one at
low load (no wait added: the flush runs in the very next pass), tens under saturation, where the per-run
costs of ORT (about 40 nodes) and its cold caches are shared. That is the point: on the 2-core machine a
batch of 8 costs about 25 µs of ORT per request against 48 µs alone.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from .ranking import FALLBACK_MODEL_ERROR, ModelBreaker, Plan

log = logging.getLogger("edgerec.edge")

MAX_BATCH = 64  # bounds one run (about 1.5 ms on the 2-core machine at 200 candidates) and so the wait


class InferenceBatcher:
    """Collects planned requests and runs them per model, MAX_BATCH at a time, in one call_soon callback."""

    def __init__(self, breaker: ModelBreaker, inference_seconds: Any, batch_sizes: Any,
                 max_batch: int = MAX_BATCH) -> None:
        self.breaker = breaker
        self.max_batch = max_batch
        self._inference = inference_seconds  # prometheus Histogram: seconds per run
        self._batch_sizes = batch_sizes  # prometheus Histogram: requests per run
        self._pending: list[Plan] = []
        self._waiters: list[asyncio.Future] = []

    def submit(self, planned: Plan) -> asyncio.Future:
        """A future done once the plan's model ran (or failed: then plan.fallback says so); never raises.

        One future per request, not one per batch: cancelling a request's task cancels its future only."""
        loop = asyncio.get_running_loop()
        if not self._pending:
            loop.call_soon(self._flush)
        waiter = loop.create_future()
        self._pending.append(planned)
        self._waiters.append(waiter)
        return waiter

    def _flush(self) -> None:
        pending, waiters = self._pending, self._waiters
        self._pending, self._waiters = [], []
        try:
            by_model: dict[int, list[Plan]] = {}  # one group unless an experiment's variant has its own model
            for planned in pending:
                by_model.setdefault(id(planned.model), []).append(planned)
            for group in by_model.values():
                for start in range(0, len(group), self.max_batch):
                    self._run(group[start : start + self.max_batch])
        except Exception:  # noqa: BLE001 - whatever happens here, no request may be left waiting
            log.exception("inference batch failed outside the model; answering from regional popularity")
            for planned in pending:
                if planned.scores is None and planned.fallback is None:
                    planned.fallback = FALLBACK_MODEL_ERROR
        finally:
            for waiter in waiters:
                if not waiter.done():  # a request whose task was cancelled meanwhile
                    waiter.set_result(None)

    def _run(self, group: list[Plan]) -> None:
        model = group[0].model
        clock = time.perf_counter()
        try:
            results = model.rank_many(
                [(p.context, p.catalog.region_index, p.catalog.candidates, p.adjust) for p in group],
                max(p.want for p in group))
        except Exception:  # noqa: BLE001 - any failure of the model must still leave the shoppers an answer
            if len(group) > 1:
                # Alone, each request gets its own chance: one request the model chokes on cannot fail the others.
                for planned in group:
                    self._run([planned])
                return
            log.exception("model %s failed; answering from regional popularity", model.version)
            group[0].fallback = FALLBACK_MODEL_ERROR
            return
        run_s = time.perf_counter() - clock
        self.breaker.record(run_s, time.monotonic())
        self._inference.observe(run_s)
        if model.batched:
            self._batch_sizes.observe(len(group))
        else:  # a bundle from before batched graphs: rank_many ran the requests one by one
            for _ in group:
                self._batch_sizes.observe(1)
        for planned, (scores, positions) in zip(group, results):
            want = planned.want
            planned.scores, planned.positions = scores[:want], positions[:want]
            planned.model_s = run_s
