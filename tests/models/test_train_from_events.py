"""Training on the shop's own events: positives, shown-but-not-taken, determinism and the training report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgerec.cli.main import main  # noqa: E402
from models.events import customer_of, training_set  # noqa: E402
from tests.loop_support import row, shop_events, store_events


@pytest.fixture(scope="module")
def events(synthetic_csv: Path) -> list[dict]:
    return shop_events(synthetic_csv)


def test_purchases_and_add_to_carts_are_positives_and_unanswered_impressions_are_shown_not_taken() -> None:
    events = [
        row(
            {
                "id": "1",
                "kind": "impression",
                "ts": 1.0,
                "region": "GB",
                "request_id": "a",
                "offer_ids": ["22386", "21931"],
            }
        ),
        row({"id": "2", "kind": "add_to_cart", "ts": 2.0, "region": "GB", "request_id": "a", "offer_ids": ["22386"]}),
        row({"id": "3", "kind": "impression", "ts": 3.0, "region": "GB", "request_id": "b", "offer_ids": ["O-9"]}),
        row(
            {
                "id": "4",
                "kind": "purchase",
                "ts": 4.0,
                "region": "gb",
                "request_id": "c",
                "shopper": "p1",
                "offer_ids": ["O-9"],
                "value": 8.0,
            }
        ),
    ]
    data = training_set(reversed(events), sku_of={"O-9": "85123A"})
    assert data.positives.stock_code.tolist() == ["22386", "85123A"]
    assert data.positives.customer_id.tolist()[1] == customer_of("p1") > 0
    assert data.shown.stock_code.tolist() == ["85123A"]  # request a got feedback: its impression is not "shown"
    assert data.counts["shown_not_taken"] == 1 and data.window == (1.0, 4.0)


def test_same_events_and_seed_give_the_same_bundle_and_a_report_with_plot(events, tmp_path: Path) -> None:
    store_events(tmp_path / "events.db", events)
    first, second = tmp_path / "a", tmp_path / "b"
    assert main(["model", "train", "--events", str(tmp_path / "events.db"), "--out", str(first)]) == 0
    assert (
        main(["model", "train", "--events", str(tmp_path / "events.db"), "--out", str(second), "--served", str(first)])
        == 0
    )
    assert (first / "model.onnx").read_bytes() == (second / "model.onnx").read_bytes()
    report = json.loads((second / "training_report.json").read_text())
    assert report["counts"]["shown_not_taken"] > 0 and report["counts"]["purchase"] > 0
    week = report["held_out_week"]
    assert week["days"] == 7 and week["users"] > 0
    assert set(week["models"]) == {"candidate", "served"}
    assert week["models"]["candidate"]["ndcg@10"] == pytest.approx(week["models"]["served"]["ndcg@10"])
    assert (second / "training_report.png").stat().st_size > 1000
    assert report["data_window"]["first_event"] < report["data_window"]["last_event"]


def test_train_needs_one_source(tmp_path: Path, capsys) -> None:
    assert main(["model", "train", "--out", str(tmp_path / "b")]) == 1
    assert "--data CSV, --events DSN or --from-origin URL" in capsys.readouterr().err
    assert main(["model", "train", "--events", str(tmp_path / "absent.db"), "--out", str(tmp_path / "b")]) == 1


def test_the_order_history_joins_the_events_of_the_same_shoppers(synthetic_csv: Path, tmp_path, monkeypatch) -> None:
    from edgerec.cli.training import _pseudonym_of
    from models.data import read_transactions
    from models.events import with_orders

    monkeypatch.setenv("EDGEREC_PSEUDONYM_KEY", "k" * 32)
    pseudonym = _pseudonym_of()
    orders = read_transactions(synthetic_csv)
    shopper = int(orders.customer_id[orders.customer_id > 0][0])
    shown = row(
        {
            "id": "i1",
            "kind": "impression",
            "ts": 1.3e9,
            "region": "GB",
            "request_id": "q1",
            "shopper": pseudonym(str(shopper)),
            "offer_ids": ["22386"],
        }
    )
    data = with_orders(training_set([shown]), orders, pseudonym)
    assert data.counts["order_lines"] > 0 and data.counts["order_shoppers"] > 100
    assert int(data.shown.customer_id[0]) in set(data.positives.customer_id.tolist())
    events_db = tmp_path / "events.db"
    store_events(events_db, [shown])
    out = tmp_path / "b"
    assert main(["model", "train", "--events", str(events_db), "--orders", str(synthetic_csv), "--out", str(out)]) == 0
    assert json.loads((out / "training_report.json").read_text())["counts"]["order_lines"] == data.counts["order_lines"]
