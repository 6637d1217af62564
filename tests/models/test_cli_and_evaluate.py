from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

from models.cli import add_model_commands
from models.evaluate import evaluate, split_by_date
from models.runtime import Ranker

METHOD_KEYS = {"recall@10", "ndcg@10", "map@10", "coverage@10", "repeat_share@10"}


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="edgerec model")
    add_model_commands(parser.add_subparsers(required=True))
    args = parser.parse_args(argv)
    return args.func(args)


@pytest.fixture(scope="module")
def split_files(synthetic_csv: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("split")
    history, test = folder / "history.csv.gz", folder / "test.csv"
    split_by_date(synthetic_csv, "2011-10-01", history, test)
    return history, test


def test_split_by_date_puts_earlier_rows_in_history_and_keeps_every_row(synthetic_csv: Path, tmp_path: Path) -> None:
    history_rows, test_rows = split_by_date(synthetic_csv, "2011-10-01", tmp_path / "h.csv", tmp_path / "t.csv")
    assert history_rows > test_rows > 0
    history_dates = [line.split(",")[4] for line in (tmp_path / "h.csv").read_text().splitlines()[1:]]
    assert max(history_dates) < "2011-10-01"
    assert len(history_dates) == history_rows


def test_cli_train_then_evaluate_prints_one_json_report(
    split_files: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    history, test = split_files
    assert run_cli(["train", "--data", str(history), "--out", str(tmp_path / "b"), "--context-length", "30"]) == 0
    assert Ranker.load(tmp_path / "b").context_length == 30
    capsys.readouterr()
    assert (
        run_cli(["evaluate", "--bundle", str(tmp_path / "b"), "--history", str(history), "--test", str(test), "--json"])
        == 0
    )
    report = json.loads(capsys.readouterr().out)
    assert report["users"] > 50
    assert set(report["model"]) == METHOD_KEYS
    assert set(report["baselines"]) == {"popularity", "region_popularity", "repeat", "item_knn", "tifu_knn", "up_cf_r"}
    assert set(report["baseline_tuning"]) == {"tifu_knn", "up_cf_r"}
    assert set(report["new_items"]["baselines"]) == set(report["baselines"])
    assert report["new_items"]["model"]["repeat_share@10"] == 0.0


def test_model_beats_popularity_in_the_evaluation_protocol(split_files: tuple[Path, Path], tmp_path: Path) -> None:
    history, test = split_files
    assert run_cli(["train", "--data", str(history), "--out", str(tmp_path / "b")]) == 0
    report = evaluate(tmp_path / "b", history, test)
    assert report["model"]["ndcg@10"] > report["baselines"]["popularity"]["ndcg@10"]
    assert report["model"]["recall@10"] > report["baselines"]["popularity"]["recall@10"]


@pytest.mark.parametrize("command", ["train", "evaluate"])
def test_cli_reports_missing_file_in_one_line_with_exit_code_2(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    absent = str(tmp_path / "absent.csv")
    argv = (
        ["train", "--data", absent, "--out", str(tmp_path / "b")]
        if command == "train"
        else ["evaluate", "--bundle", str(tmp_path / "nobundle"), "--history", absent, "--test", absent, "--json"]
    )
    assert run_cli(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and len(captured.err.strip().splitlines()) == 1
    assert "Traceback" not in captured.err


def test_cli_rejects_wrong_columns_with_exit_code_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("a,b,c\n1,2,3\n", encoding="utf-8")
    assert run_cli(["train", "--data", str(wrong), "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert "missing columns" in err and len(err.strip().splitlines()) == 1


def test_next_basket_baselines_are_tuned_on_the_history_alone(split_files: tuple[Path, Path]) -> None:
    from models.baselines import TIFU_GRID, UPCF_GRID, tune
    from models.data import purchase_events, read_transactions

    history, test = split_files
    events = purchase_events(read_transactions(history))
    candidates = sorted(set(events.stock_code.tolist()))
    tuning = tune(events, candidates, np.zeros(len(candidates)))
    for name, grid in (("tifu_knn", TIFU_GRID), ("up_cf_r", UPCF_GRID)):
        assert all(tuning[name]["params"][key] in values for key, values in grid.items())
        assert tuning[name]["validation_users"] > 20 and 0 < tuning[name]["validation_ndcg@10"] <= 1
