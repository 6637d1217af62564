"""The profile store benchmark in a second: checks the outputs' shape and that every figure is there, never the
figures themselves."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("matplotlib") is None,
    reason="the bench extra is not installed (pip install -e '.[bench]')",
)

REPO = Path(__file__).resolve().parents[2]


def test_a_short_run_writes_report_json_md_and_a_png(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.profile_store",
            "--out",
            str(tmp_path),
            "--profiles",
            "20",
            "--rounds",
            "1",
            "--redis-url",
            "none",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, f"stdout:\n{result.stdout[-4000:]}\nstderr:\n{result.stderr[-4000:]}"
    figures = json.loads((tmp_path / "report.json").read_text())["figures"]
    for size in ("small", "full"):
        for call in ("get_hit", "get_disk", "apply_event", "erase"):
            assert figures[f"{call}_{size}_us"] > 0
    assert figures["full_decoded_python_bytes"] > figures["full_python_bytes"] > figures["full_encoded_bytes"] > 0
    assert "| embedded get, memory hit (µs) |" in (tmp_path / "report.md").read_text()
    assert (tmp_path / "profile_store.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_arguments_give_a_one_line_message_and_exit_2(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.profile_store", "--out", str(tmp_path), "--profiles", "0"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and "at least 1" in result.stderr and "Traceback" not in result.stderr
