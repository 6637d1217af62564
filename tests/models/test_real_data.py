from __future__ import annotations

from pathlib import Path

import pytest

from models.runtime import Ranker
from models.train import train_bundle

# The shared data sit beside the repository: <repo>/../shared/data/online_retail/.
REAL_DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "online_retail" / "transactions.csv.gz"


@pytest.mark.skipif(not REAL_DATA.is_file(), reason=f"shared Online Retail data not found at {REAL_DATA}")
def test_real_data_trains_quickly_into_a_loadable_bundle_that_beats_popularity(tmp_path: Path) -> None:
    manifest = train_bundle(REAL_DATA, tmp_path / "bundle", progress=False)
    training = manifest["training"]
    assert training["rows"] == 431_673 and training["purchase_rows"] > 300_000
    assert training["seconds"] < 60
    assert {"GB", "DE", "FR", "IE", "ZA", "JE"} <= set(manifest["regions"])
    metrics = training["metrics"]
    assert metrics["model"]["ndcg@10"] > 1.5 * metrics["popularity"]["ndcg@10"]
    assert Ranker.load(tmp_path / "bundle").version == manifest["version"]
