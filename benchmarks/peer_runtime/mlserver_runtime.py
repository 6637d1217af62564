"""MLServer custom runtime for the benchmark's peer: edgerec's ONNX ranker, candidates and top-k, served by MLServer.

Written the way MLServer's users write a custom runtime (an MLModel holding the session and the
candidate arrays, codecs for the tensors). It runs in the peer's own venv, so it imports nothing
from edgerec: the harness copies it next to model.onnx, manifest.json and catalog.json.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime
from mlserver import MLModel
from mlserver.codecs import NumpyCodec, StringCodec
from mlserver.types import InferenceRequest, InferenceResponse
from mlserver.utils import get_model_uri

# The inputs of edgerec's ranking graph (models/export.py), fed as models.runtime.Ranker feeds them;
# context_ages_days came with a later graph (events sent without an age take the manifest's defaults).
FEEDS = {"context_items", "region", "candidates", "penalty", "k"}
ROWS = {"context_items", "context_ages_days", "candidates", "penalty"}  # one row per request in a batched graph
OPTIONAL_FEEDS = {"context_ages_days"}


class RecommenderRuntime(MLModel):
    async def load(self) -> bool:
        model_path = Path(await get_model_uri(self._settings, wellknown_filenames=["model.onnx"]))
        folder = model_path.parent
        manifest = json.loads((folder / "manifest.json").read_text())
        catalog = json.loads((folder / "catalog.json").read_text())
        onnxruntime.disable_telemetry_events()
        options = onnxruntime.SessionOptions()  # the edge's session settings
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        self._session = onnxruntime.InferenceSession(
            str(model_path), sess_options=options, providers=["CPUExecutionProvider"]
        )
        inputs = {i.name for i in self._session.get_inputs()}
        self._batched = len(self._session.get_inputs()[0].shape) == 2
        if not FEEDS <= inputs <= FEEDS | OPTIONAL_FEEDS:
            # The graph's signature moved on: say so rather than serve something else than the edge does.
            raise ValueError(f"the ranking graph takes {sorted(inputs)}; this runtime feeds {sorted(FEEDS)}")
        self._context_length = int(manifest["context_length"])
        self._default_ages = None
        if "context_ages_days" in inputs:
            self._default_ages = np.asarray(manifest["default_ages_days"], dtype=np.float32)
        self._items = {str(c).upper(): i + 1 for i, c in enumerate(manifest["items"])}
        regions = {str(c).upper(): i + 1 for i, c in enumerate(manifest["regions"])}
        self._regions = {}
        for region, offers in catalog.items():
            offers = sorted(offers, key=lambda o: o["id"])
            positions: dict[str, list[int]] = {}
            for i, o in enumerate(offers):
                positions.setdefault(o["id"], []).append(i)
                positions.setdefault(o["sku"], []).append(i)
            self._regions[region] = {
                "index": np.array([regions.get(region, 0)], dtype=np.int64),
                "candidates": np.array([self._items.get(o["sku"].upper(), 0) for o in offers], dtype=np.int64),
                "penalty": np.array(
                    [0.0 if o["stock"] > 0 and o["price"] > 0 else -np.inf for o in offers], dtype=np.float32
                ),
                "offer_ids": [o["id"] for o in offers],
                "positions": positions,
            }
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        inputs = {i.name: i for i in payload.inputs}
        recent = StringCodec.decode_input(inputs["recent_items"]) if "recent_items" in inputs else []
        region = self._regions[StringCodec.decode_input(inputs["region"])[0].upper()]
        k = int(NumpyCodec.decode_input(inputs["k"]).reshape(-1)[0])
        exclude = StringCodec.decode_input(inputs["exclude"]) if "exclude" in inputs else []

        context = np.zeros(self._context_length, dtype=np.int64)
        recent = recent[-self._context_length :] if self._context_length else []
        if recent:
            context[self._context_length - len(recent) :] = [self._items.get(s.upper(), 0) for s in recent]
        penalty = region["penalty"]
        if exclude:
            penalty = penalty.copy()
            for key in exclude:
                for pos in region["positions"].get(key, ()):
                    penalty[pos] = -np.inf
        feeds = {
            "context_items": context,
            "region": region["index"],
            "candidates": region["candidates"],
            "penalty": penalty,
            "k": np.array([k], dtype=np.int64),
        }
        if self._default_ages is not None:
            feeds["context_ages_days"] = self._default_ages
        if self._batched:  # graphs since 2026-12 take a batch of requests: this is a batch of one
            feeds = {name: value[None, :] if name in ROWS else value for name, value in feeds.items()}
            scores, positions = (output[0] for output in self._session.run(None, feeds))
        else:
            scores, positions = self._session.run(None, feeds)
        keep = scores > -np.inf
        scores, positions = scores[keep], positions[keep]
        offer_ids = [region["offer_ids"][p] for p in positions.tolist()]
        return InferenceResponse(
            model_name=self.name,
            model_version=self.version,
            outputs=[
                StringCodec.encode_output("offer_ids", offer_ids),
                NumpyCodec.encode_output("scores", scores.astype(np.float32)),
            ],
        )
