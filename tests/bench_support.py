"""What the benchmarks' tests share: a benchmark run as `python -m benchmarks.<name>` from the repository, the skip
where its extras are not installed, and the check that a plot it wrote is a PNG."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def needs_modules(*modules: str, reason: str = "the bench extra is not installed (pip install -e '.[bench]')"):
    """Skip where one of `modules` is not installed; looked up only, never imported (locust would monkey-patch the
    test process with gevent)."""
    return pytest.mark.skipif(any(importlib.util.find_spec(m) is None for m in modules), reason=reason)


def run_benchmark(name: str, *args: str, timeout: float, check: bool = True) -> subprocess.CompletedProcess[str]:
    """`python -m benchmarks.<name> ARGS` in the repository; with `check`, a non-zero exit fails the test with the
    tails of both outputs."""
    result = subprocess.run(
        [sys.executable, "-m", f"benchmarks.{name}", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check:
        assert result.returncode == 0, f"stdout:\n{result.stdout[-4000:]}\nstderr:\n{result.stderr[-4000:]}"
    return result


def is_png(path: Path) -> bool:
    return path.read_bytes()[:8] == PNG_SIGNATURE
