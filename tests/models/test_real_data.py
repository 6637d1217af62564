"""Training and the evaluation protocol on the real Online Retail data (../shared/data/online_retail/), when present."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.evaluate import evaluate, split_by_date
from models.runtime import Ranker
from models.train import train_bundle

# The shared data sit beside the repository: <repo>/../shared/data/online_retail/.
REAL_DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "online_retail" / "transactions.csv.gz"
needs_real_data = pytest.mark.skipif(
    not REAL_DATA.is_file(), reason=f"shared Online Retail data not found at {REAL_DATA}"
)


def best_baseline(section: dict) -> float:
    return max(metrics["ndcg@10"] for metrics in section["baselines"].values())


@pytest.fixture(scope="module")
def august_split(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The issue's split of the whole file: history through August, test September and October; one bundle trained
    on the history only (the tests of training and of evaluation share it: a training takes ~20 s)."""
    folder = tmp_path_factory.mktemp("real")
    history, test = folder / "history.csv.gz", folder / "test.csv.gz"
    rows = split_by_date(REAL_DATA, "2011-09-01", history, test)
    manifest = train_bundle(history, folder / "bundle", progress=False)
    return {"rows": rows, "manifest": manifest, "bundle": folder / "bundle", "history": history, "test": test}


@pytest.fixture(scope="module")
def august_split_report(august_split: dict) -> dict:
    """The evaluation protocol on that split, the model scored through ONNX."""
    return evaluate(august_split["bundle"], august_split["history"], august_split["test"])


@needs_real_data
def test_real_data_trains_into_a_loadable_bundle_that_beats_popularity(august_split: dict) -> None:
    history_rows, test_rows = august_split["rows"]
    assert history_rows + test_rows == 431_673  # every row of the file, on one side of the cut
    manifest = august_split["manifest"]
    training = manifest["training"]
    assert training["rows"] == history_rows and training["purchase_rows"] > 300_000
    assert training["seconds"] > 0  # recorded; how long training takes is benchmarks.model's figure, not a test's
    # The big markets and the small ones (JE, and some thirty in all: none dropped for its size).
    assert {"GB", "DE", "FR", "IE", "JE"} <= set(manifest["regions"]) and len(manifest["regions"]) >= 30
    metrics = training["metrics"]
    assert metrics["model"]["ndcg@10"] > 1.5 * metrics["popularity"]["ndcg@10"]
    assert Ranker.load(august_split["bundle"]).version == manifest["version"]


@needs_real_data
def test_model_beats_every_baseline_on_new_items_by_ten_percent(august_split_report: dict) -> None:
    new_items = august_split_report["new_items"]
    assert new_items["model"]["ndcg@10"] >= 1.10 * best_baseline(new_items)


@needs_real_data
def test_model_beats_every_baseline_including_tifu_knn_and_up_cf_r_on_all_targets(august_split_report: dict) -> None:
    # Regression guard just under the level reached (1.021x repeat, 1.038x TIFU-KNN on this split); the targets
    # themselves are benchmark figures (python -m benchmarks.model), not a test that cannot fail.
    baselines = august_split_report["baselines"]
    assert august_split_report["model"]["ndcg@10"] >= 1.01 * best_baseline(august_split_report)
    assert august_split_report["model"]["ndcg@10"] >= 1.02 * max(
        baselines[name]["ndcg@10"] for name in ("tifu_knn", "up_cf_r")
    )
