from __future__ import annotations

import time
from pathlib import Path

from models.data import COLUMNS, purchase_events, read_transactions
from models.synthetic import write_synthetic_transactions


def test_same_seed_gives_identical_bytes_and_other_seed_differs(tmp_path: Path) -> None:
    first = write_synthetic_transactions(tmp_path / "a.csv.gz", seed=3).read_bytes()
    second = write_synthetic_transactions(tmp_path / "b.csv.gz", seed=3).read_bytes()
    other = write_synthetic_transactions(tmp_path / "c.csv.gz", seed=4).read_bytes()
    assert first == second
    assert first != other


def test_generated_file_is_online_retail_format_with_several_countries_and_dirt(tmp_path: Path) -> None:
    started = time.perf_counter()
    path = write_synthetic_transactions(tmp_path / "t.csv", seed=1)
    assert time.perf_counter() - started < 2.0
    header = path.read_text(encoding="utf-8").splitlines()[0]
    assert header.split(",") == list(COLUMNS)
    transactions = read_transactions(path)
    assert 10_000 < len(transactions) < 40_000
    assert {"United Kingdom", "Germany", "France"} <= set(transactions.country.tolist())
    assert any(no.startswith("C") for no in transactions.invoice_no.tolist())
    assert (transactions.customer_id == -1).any()
    events = purchase_events(transactions)
    assert 250 <= len(set(events.customer_id.tolist())) <= 300
    assert 300 <= len(set(events.stock_code.tolist())) <= 400
