"""Shared fixtures: one synthetic data set and one bundle trained on it, per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.synthetic import write_synthetic_transactions
from models.train import train_bundle


@pytest.fixture(scope="session")
def synthetic_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_transactions(tmp_path_factory.mktemp("data") / "transactions.csv.gz", seed=7)


@pytest.fixture(scope="session")
def bundle_dir(synthetic_csv: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bundle")
    train_bundle(synthetic_csv, out, progress=False)
    return out
