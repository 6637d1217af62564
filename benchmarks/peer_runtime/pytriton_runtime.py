"""PyTriton server for the benchmark's PyTriton peer: edgerec's ONNX ranker, candidates and top-k, served by Triton.

    python pytriton_runtime.py MODEL_DIR --http-port P --grpc-port G --metrics-port M

Written the way PyTriton's documentation shows: a `@batch` inference function bound with `triton.bind(...)`,
dynamic batching on, so Triton merges concurrent requests into one call and the scorer ranks them in one ONNX
run. It runs in the peer's own venv, so it imports nothing from edgerec: the harness copies it and scoring.py
(the scorer both peers share) next to model.onnx, manifest.json and catalog.json.
"""

from __future__ import annotations

import argparse
import logging
import signal
from pathlib import Path
from typing import Any

import numpy as np
from pytriton.decorators import batch, group_by_keys
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig
from scoring import Scorer

MODEL = "recommender"  # benchmarks/traffic.py PEER_MODEL
MAX_BATCH = 64


def _strings(row: np.ndarray) -> list[str]:
    """A request's string tensor; empty strings are padding (clients pad to few shapes so that batches form)."""
    values = (value.decode() if isinstance(value, bytes) else str(value) for value in row.reshape(-1))
    return [value for value in values if value]


def inference(scorer: Scorer) -> Any:
    # Requests with and without the optional inputs cannot share a batch (@batch stacks each input): group first.
    @group_by_keys
    @batch
    def infer(region: np.ndarray, k: np.ndarray, **optional: np.ndarray) -> dict:
        recent, excluded = optional.get("recent_items"), optional.get("exclude")
        requests = [
            (
                _strings(recent[i]) if recent is not None else [],
                _strings(region[i])[0],
                int(k[i].reshape(-1)[0]),
                _strings(excluded[i]) if excluded is not None else [],
            )
            for i in range(len(region))
        ]
        answers = scorer.top_many(requests)
        # One output row per request, as wide as the longest answer: shorter ones end in empty ids (score 0).
        width = max((len(a.offer_ids) for a in answers), default=0)
        offer_ids = np.full((len(answers), width), b"", dtype=object)
        scores = np.zeros((len(answers), width), dtype=np.float32)
        for i, answer in enumerate(answers):
            offer_ids[i, : len(answer.offer_ids)] = [o.encode() for o in answer.offer_ids]
            scores[i, : len(answer.scores)] = answer.scores
        return {"offer_ids": offer_ids, "scores": scores}

    return infer


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model_dir", type=Path)
    p.add_argument("--http-port", type=int, required=True)
    p.add_argument("--grpc-port", type=int, required=True)
    p.add_argument("--metrics-port", type=int, required=True)
    p.add_argument("--max-queue-delay-us", type=int, default=0, help="Triton's batcher wait for more requests")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    # The harness stops a service with SIGTERM: leave as on Ctrl+C, so Triton stops its server and proxy processes.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    scorer = Scorer(args.model_dir)
    config = TritonConfig(
        http_address="127.0.0.1",
        http_port=args.http_port,
        grpc_address="127.0.0.1",
        grpc_port=args.grpc_port,
        metrics_port=args.metrics_port,
        allow_gpu_metrics=False,
    )
    with Triton(config=config) as triton:
        triton.bind(
            model_name=MODEL,
            infer_func=inference(scorer),
            inputs=[
                # Optional: PyTriton 0.7 cannot pass an empty BYTES tensor on (numpy's nditer refuses zero-size
                # operands), so a shopper without recent items (or exclusions) sends none.
                Tensor(name="recent_items", dtype=bytes, shape=(-1,), optional=True),
                Tensor(name="region", dtype=bytes, shape=(1,)),
                Tensor(name="k", dtype=np.int64, shape=(1,)),
                Tensor(name="exclude", dtype=bytes, shape=(-1,), optional=True),
            ],
            outputs=[
                Tensor(name="offer_ids", dtype=bytes, shape=(-1,)),
                Tensor(name="scores", dtype=np.float32, shape=(-1,)),
            ],
            config=ModelConfig(
                max_batch_size=MAX_BATCH,
                batcher=DynamicBatcher(max_queue_delay_microseconds=args.max_queue_delay_us),
            ),
            strict=True,
        )
        triton.serve()


if __name__ == "__main__":
    main()
