"""Running the `edgerec` command line as a user does: a subprocess of this interpreter, its output captured."""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Callable


def run_cli(
    *args: str, admin_token: str | None = None, env: dict[str, str] | None = None, timeout: float = 180
) -> subprocess.CompletedProcess:
    """`edgerec ARGS...` with EDGEREC_ADMIN_TOKEN set to `admin_token` (and unset without one)."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("EDGEREC_ADMIN_TOKEN")}
    if admin_token is not None:
        environ["EDGEREC_ADMIN_TOKEN"] = admin_token
    environ.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "edgerec", *args], capture_output=True, text=True, timeout=timeout, env=environ
    )


def assert_one_line_error(result: subprocess.CompletedProcess, *needles: str) -> str:
    """A refusal as the CLI promises it: a non-zero exit and one `edgerec: ...` line on stderr, no traceback."""
    assert result.returncode != 0, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgerec: "), result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def in_parallel(*calls: Callable[[], subprocess.CompletedProcess]) -> list[subprocess.CompletedProcess]:
    """Independent command lines run side by side (each is mostly the interpreter's start-up); results in order."""
    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(lambda call: call(), calls))
