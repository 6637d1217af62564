"""The profile store benchmark in a second: checks the outputs' shape and that every figure is there, never the
figures themselves."""

from __future__ import annotations

import json
from pathlib import Path

from tests.bench_support import is_png, needs_modules, run_benchmark

pytestmark = needs_modules("matplotlib")


def test_a_short_run_writes_report_json_md_and_a_png(tmp_path: Path) -> None:
    run_benchmark(
        "profile_store", "--out", str(tmp_path), "--profiles", "20", "--rounds", "1", "--redis-url", "none", timeout=120
    )
    figures = json.loads((tmp_path / "report.json").read_text())["figures"]
    for size in ("small", "full"):
        for call in ("get_hit", "get_disk", "apply_event", "erase"):
            assert figures[f"{call}_{size}_us"] > 0
    assert figures["full_decoded_python_bytes"] > figures["full_python_bytes"] > figures["full_encoded_bytes"] > 0
    assert "| embedded get, memory hit (µs) |" in (tmp_path / "report.md").read_text()
    assert is_png(tmp_path / "profile_store.png")


def test_bad_arguments_give_a_one_line_message_and_exit_2(tmp_path: Path) -> None:
    result = run_benchmark("profile_store", "--out", str(tmp_path), "--profiles", "0", timeout=60, check=False)
    assert result.returncode == 2 and "at least 1" in result.stderr and "Traceback" not in result.stderr
