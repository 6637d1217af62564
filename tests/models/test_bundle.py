from __future__ import annotations

import json
import shutil
from pathlib import Path

import onnx
import pytest

from models.bundle import FORMAT, feature_spec_digest, read_bundle, sha256_hex, version_of
from models.features import FEATURE_NAMES
from models.golden import DEFAULT_AGE_POSITIONS
from models.profile import MAX_ITEMS
from models.runtime import BundleError, Ranker
from models.train import DEFAULT_CONTEXT_LENGTH, train_bundle


def test_bundle_passes_onnx_checker_and_manifest_hashes_the_model(bundle_dir: Path) -> None:
    onnx_bytes, manifest = read_bundle(bundle_dir)
    onnx.checker.check_model(onnx.load_from_string(onnx_bytes), full_check=True)
    assert manifest["format"] == FORMAT
    assert manifest["sha256"] == sha256_hex(onnx_bytes)
    assert manifest["version"].startswith("m-") and len(manifest["version"]) == 14
    assert [entry["name"] for entry in manifest["inputs"]] == [
        "slot_items",
        "slot_counts",
        "slot_days_since_last",
        "slot_days_since_first",
        "slot_decayed",
        "slot_rows",
        "region",
        "candidates",
        "penalty",
        "k",
    ]
    assert [entry["name"] for entry in manifest["outputs"]] == ["scores", "indices"]
    assert manifest["context_length"] == DEFAULT_CONTEXT_LENGTH == MAX_ITEMS == manifest["profile"]["max_items"]
    assert len(manifest["items"]) > 300
    defaults = manifest["default_ages_days"]
    assert len(defaults) == DEFAULT_AGE_POSITIONS and all(a >= b >= 0 for a, b in zip(defaults, defaults[1:]))
    assert {"GB", "DE", "FR"} <= set(manifest["regions"])
    assert len(manifest["golden"]) >= 3
    assert list(manifest["training"]["feature_weights"]) == list(FEATURE_NAMES) == manifest["features"]
    assert manifest["training"]["date_range"][0] < manifest["training"]["date_range"][1]
    assert {"model", "repeat", "item_knn"} <= set(manifest["training"]["metrics"])


def test_the_onnx_file_names_its_version_training_window_and_feature_spec(bundle_dir: Path) -> None:
    import onnxruntime

    onnx_bytes, manifest = read_bundle(bundle_dir)
    session = onnxruntime.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    described = session.get_modelmeta().custom_metadata_map
    first, last = manifest["training"]["date_range"]
    assert described == {
        "edgerec.bundle_version": manifest["version"],
        "edgerec.training_window": f"{first.replace(' ', 'T')}/{last.replace(' ', 'T')}",
        "edgerec.feature_spec_sha256": manifest["feature_spec_sha256"],
    }
    assert manifest["feature_spec_sha256"] == feature_spec_digest(manifest)
    # The version is the hash of the graph without its description (which names the version).
    bare = onnx.load_from_string(onnx_bytes)
    del bare.metadata_props[:]
    assert version_of(bare.SerializeToString()) == manifest["version"]


def test_a_model_that_names_another_bundle_is_refused(bundle_dir: Path) -> None:
    onnx_bytes, manifest = read_bundle(bundle_dir)
    relabelled = onnx.load_from_string(onnx_bytes)
    for prop in relabelled.metadata_props:
        if prop.key == "edgerec.bundle_version":
            prop.value = "m-000000000000"
    forged = relabelled.SerializeToString()
    with pytest.raises(BundleError, match="edgerec.bundle_version 'm-000000000000'"):
        Ranker.from_bytes(forged, {**manifest, "sha256": sha256_hex(forged)})


def test_the_feature_spec_digest_changes_with_the_vocabulary(bundle_dir: Path) -> None:
    _, manifest = read_bundle(bundle_dir)
    assert feature_spec_digest({**manifest, "items": manifest["items"][:-1]}) != manifest["feature_spec_sha256"]
    assert feature_spec_digest({**manifest, "golden": []}) == manifest["feature_spec_sha256"]


def test_ranker_loads_a_good_bundle(bundle_dir: Path) -> None:
    ranker = Ranker.load(bundle_dir)
    assert ranker.version.startswith("m-") and ranker.context_length == DEFAULT_CONTEXT_LENGTH
    assert ranker.sha256 == ranker.manifest["sha256"]


def test_tampered_model_bytes_are_rejected_by_hash(bundle_dir: Path) -> None:
    onnx_bytes, manifest = read_bundle(bundle_dir)
    tampered = bytearray(onnx_bytes)
    tampered[len(tampered) // 2] ^= 0xFF
    with pytest.raises(BundleError, match="sha256"):
        Ranker.from_bytes(bytes(tampered), manifest)


def test_rehashed_model_with_other_weights_fails_the_golden_check(bundle_dir: Path) -> None:
    onnx_bytes, manifest = read_bundle(bundle_dir)
    model = onnx.load_from_string(onnx_bytes)
    for initializer in model.graph.initializer:
        if initializer.name == "repeat_base_scores":
            weights = onnx.numpy_helper.to_array(initializer) * 3.0
            initializer.CopyFrom(onnx.numpy_helper.from_array(weights, initializer.name))
    tampered = model.SerializeToString()
    with pytest.raises(BundleError, match="golden"):
        Ranker.from_bytes(tampered, {**manifest, "sha256": sha256_hex(tampered)})


def test_tampered_golden_expectation_is_rejected(bundle_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "bundle"
    shutil.copytree(bundle_dir, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["golden"][0]["expected"]["scores"][0] += 0.01
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="golden case 0"):
        Ranker.load(copy)


def test_missing_bundle_files_and_wrong_format_raise_bundle_error(bundle_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="cannot read bundle"):
        Ranker.load(tmp_path / "nowhere")
    onnx_bytes, manifest = read_bundle(bundle_dir)
    with pytest.raises(BundleError, match="format"):
        Ranker.from_bytes(onnx_bytes, {**manifest, "format": "other/9"})
    with pytest.raises(BundleError, match="lacks golden"):
        Ranker.from_bytes(onnx_bytes, {key: value for key, value in manifest.items() if key != "golden"})


def test_training_is_deterministic_so_same_data_gives_same_version(
    synthetic_csv: Path, bundle_dir: Path, tmp_path: Path
) -> None:
    again = train_bundle(synthetic_csv, tmp_path / "again", progress=False)
    assert again["version"] == json.loads((bundle_dir / "manifest.json").read_text())["version"]
