"""Model bundle on disk: model.onnx + manifest.json, content-addressed by the sha256 of the model.

Golden cases store the business-rule penalty as `excluded_positions` (penalty -inf there, 0
elsewhere) so the manifest stays plain JSON without Infinity.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

FORMAT = "edgerec-bundle/1"
MODEL_FILE = "model.onnx"
MANIFEST_FILE = "manifest.json"
# The graph inputs that hold one row per request in a batched graph (region is [B]; k is shared, [1]): those of
# profile graphs (since 2026-12-04) and of context graphs (before).
PROFILE_INPUTS = (
    "profile_items",
    "profile_counts",
    "profile_days_since_last",
    "profile_days_since_first",
    "profile_decayed",
)
# The ragged profile graph's (newer bundles): the filled slots of a whole batch, with slot_rows. Golden cases of
# both keep one request's [P] profile row under the padded graph's names.
SLOT_INPUTS = ("slot_items", "slot_counts", "slot_days_since_last", "slot_days_since_first", "slot_decayed")
ROW_INPUTS = ("context_items", "context_ages_days", *PROFILE_INPUTS, "candidates", "penalty")
_INTEGER_INPUTS = frozenset({"context_items", "profile_items", "region", "candidates", "k"})
REQUIRED_KEYS = ("format", "version", "sha256", "inputs", "outputs", "context_length", "items", "regions", "golden")


class BundleError(Exception):
    """A bundle is missing, malformed, does not match its hash, or fails its golden check."""


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def version_of(onnx_bytes: bytes) -> str:
    """Content-derived, so the same model always has the same version (of a model that describes itself, the
    bytes of its graph before the description is added: the description names the version)."""
    return "m-" + sha256_hex(onnx_bytes)[:12]


# The model's description of itself in its metadata_props (onnxruntime's custom_metadata_map, Netron's properties),
# written at export (models/export.py) and checked against the manifest at load (models/runtime.py).
METADATA_VERSION = "edgerec.bundle_version"
METADATA_TRAINING_WINDOW = "edgerec.training_window"  # ISO 8601 interval: first/last transaction trained on
METADATA_FEATURE_SPEC = "edgerec.feature_spec_sha256"  # the manifest's feature_spec_sha256

# What the serving side must reproduce exactly to compute the features the model was trained on: its inputs and
# outputs, the feature names, the profile's shape, the vocabularies. Its digest is in the manifest and the ONNX file.
FEATURE_SPEC_KEYS = (
    "inputs",
    "outputs",
    "features",
    "context_length",
    "profile",
    "default_ages_days",
    "items",
    "regions",
)


def feature_spec_digest(fields: dict) -> str:
    """sha256 of the canonical JSON of the manifest's feature spec (FEATURE_SPEC_KEYS; an absent key is null)."""
    spec = {key: fields.get(key) for key in FEATURE_SPEC_KEYS}
    return sha256_hex(json.dumps(spec, sort_keys=True, separators=(",", ":"), allow_nan=False).encode("utf-8"))


def sequence_history(context: np.ndarray, ages_days: np.ndarray) -> dict[str, list]:
    """The shopper inputs of a sequence graph's golden case, as JSON lists."""
    return {
        "context_items": [int(v) for v in context],
        "context_ages_days": [float(np.float32(v)) for v in ages_days],
    }


def profile_history(slots: dict[str, np.ndarray]) -> dict[str, list]:
    """The shopper inputs of a profile graph's golden case: slots maps the ProfileSlots fields (items, counts, ...)
    to [P] arrays."""
    inputs: dict[str, list] = {"profile_items": [int(v) for v in slots["items"]]}
    for field, name in zip(("counts", "days_since_last", "days_since_first", "decayed"), PROFILE_INPUTS[1:]):
        inputs[name] = [float(np.float32(v)) for v in slots[field]]
    return inputs


def golden_case(
    history: dict[str, list],
    region: int,
    candidates: np.ndarray,
    excluded_positions: list[int],
    k: int,
    expected_scores: np.ndarray,
    expected_indices: np.ndarray,
) -> dict:
    """One golden request and its expected answer, of a graph whose shopper inputs are `history`
    (sequence_history, profile_history): the rest of the request and the answer as JSON lists, in the manifest's
    order."""
    return {
        "inputs": {
            **history,
            "region": [int(region)],
            "candidates": [int(v) for v in candidates],
            "excluded_positions": [int(v) for v in excluded_positions],
            "k": [int(k)],
        },
        "expected": {"scores": [float(v) for v in expected_scores], "indices": [int(v) for v in expected_indices]},
    }


def golden_feeds(case: dict, batched: bool = True) -> dict[str, np.ndarray]:
    """The graph inputs of a golden case: a batch of one row (batched=False: the unbatched graphs of bundles
    made before 2026-12, whose inputs are one request's [L] and [N] arrays)."""
    inputs = case["inputs"]
    candidates = np.asarray(inputs["candidates"], dtype=np.int64)
    penalty = np.zeros(len(candidates), dtype=np.float32)
    penalty[np.asarray(inputs["excluded_positions"], dtype=np.int64)] = -np.inf
    feeds = {
        name: np.asarray(values, dtype=np.int64 if name in _INTEGER_INPUTS else np.float32)
        for name, values in inputs.items()
        if name != "excluded_positions"
    }
    feeds["candidates"], feeds["penalty"] = candidates, penalty
    if batched:
        for name in ROW_INPUTS:
            if name in feeds:
                feeds[name] = feeds[name][None, :]
    return feeds


def _write_atomically(path: Path, data: bytes) -> None:
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=path.name, suffix=".tmp", delete=False) as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.chmod(handle.name, 0o644)  # bundles are published, not secret
    os.replace(handle.name, path)


def write_bundle(out_dir: str | Path, onnx_bytes: bytes, fields: dict, version: str | None = None) -> dict:
    """Write model.onnx then manifest.json (format, version, created_at, sha256 added); returns the manifest.
    `version` defaults to the hash of onnx_bytes (a self-describing model passes the one its metadata names)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = {
        "format": FORMAT,
        "version": version or version_of(onnx_bytes),
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "sha256": sha256_hex(onnx_bytes),
        **fields,
    }
    _write_atomically(out_dir / MODEL_FILE, onnx_bytes)
    # The manifest goes last: a reader that sees it sees the model it describes.
    _write_atomically(out_dir / MANIFEST_FILE, json.dumps(manifest, indent=1, allow_nan=False).encode("utf-8"))
    return manifest


def check_manifest(manifest: object, onnx_bytes: bytes) -> None:
    """Raise BundleError unless the manifest is complete, of our format, and hashes these model bytes."""
    if not isinstance(manifest, dict):
        raise BundleError("manifest is not a JSON object")
    missing = [key for key in REQUIRED_KEYS if key not in manifest]
    if missing:
        raise BundleError(f"manifest lacks {', '.join(missing)}")
    if manifest["format"] != FORMAT:
        raise BundleError(f"unsupported bundle format {manifest['format']!r}, expected {FORMAT!r}")
    actual = sha256_hex(onnx_bytes)
    if actual != manifest["sha256"]:
        raise BundleError(f"model.onnx sha256 {actual[:12]}… does not match manifest {str(manifest['sha256'])[:12]}…")
    if not manifest["golden"]:
        raise BundleError("manifest has no golden cases")


def read_bundle(bundle_dir: str | Path) -> tuple[bytes, dict]:
    """The model bytes and the parsed manifest of a bundle directory (hash not yet checked)."""
    bundle_dir = Path(bundle_dir)
    try:
        onnx_bytes = (bundle_dir / MODEL_FILE).read_bytes()
        manifest = json.loads((bundle_dir / MANIFEST_FILE).read_text(encoding="utf-8"))
    except OSError as error:
        raise BundleError(f"cannot read bundle {bundle_dir}: {error.strerror}: {error.filename}") from None
    except ValueError as error:
        raise BundleError(f"{bundle_dir / MANIFEST_FILE} is not valid JSON: {error}") from None
    return onnx_bytes, manifest
