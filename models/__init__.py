"""Recommendation models: data cleaning, training, ONNX export, bundles, and the edge runtime
(models.runtime.Ranker)."""
