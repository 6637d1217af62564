"""MLServer custom runtime for the benchmark's MLServer peer: edgerec's ONNX ranker, candidates and top-k.

Written the way MLServer's users write a custom runtime (an MLModel holding the scorer, codecs for the
tensors). It runs in the peer's own venv, so it imports nothing from edgerec: the harness copies it and
scoring.py (the scorer both peers share) next to model.onnx, manifest.json and catalog.json.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from mlserver import MLModel
from mlserver.codecs import NumpyCodec, StringCodec
from mlserver.types import InferenceRequest, InferenceResponse
from mlserver.utils import get_model_uri
from scoring import Scorer


class RecommenderRuntime(MLModel):
    async def load(self) -> bool:
        model_path = Path(await get_model_uri(self._settings, wellknown_filenames=["model.onnx"]))
        self._scorer = Scorer(model_path.parent)
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        inputs = {i.name: i for i in payload.inputs}
        recent = StringCodec.decode_input(inputs["recent_items"]) if "recent_items" in inputs else []
        region = StringCodec.decode_input(inputs["region"])[0]
        k = int(NumpyCodec.decode_input(inputs["k"]).reshape(-1)[0])
        exclude = StringCodec.decode_input(inputs["exclude"]) if "exclude" in inputs else []
        answer = self._scorer.top(recent, region, k, exclude)
        return InferenceResponse(
            model_name=self.name,
            model_version=self.version,
            outputs=[
                StringCodec.encode_output("offer_ids", answer.offer_ids),
                NumpyCodec.encode_output("scores", answer.scores.astype(np.float32)),
            ],
        )
