"""`edgerec demo` without --workdir: it says that its rate limits are off, and its services' logs outlive it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path


def test_the_demo_says_its_rate_limits_are_off_and_keeps_its_logs_after_it_exits(tmp_path):
    env = {**os.environ, "TMPDIR": str(tmp_path)}  # its temporary directories land here, and are checked here
    result = subprocess.run([sys.executable, "-m", "edgerec", "demo"], capture_output=True, text=True, timeout=240,
                            env=env)
    out = result.stdout
    assert result.returncode == 0, out + result.stderr[-3000:]
    assert len(re.findall(r"^ +rate limits are off in the demo: .+ loopback address", out, re.M)) == 1, out
    work = Path(re.search(r"^\[1/6\] generating a synthetic shop .*\((.+)\)$", out, re.M).group(1))
    logs = Path(re.search(r"^ +service logs: (.+) \(kept after the demo exits\)$", out, re.M).group(1))
    assert f"their logs stay in {logs}" in out.splitlines()[-1]
    assert not work.exists()  # the temporary work directory is gone ...
    assert logs.parent == tmp_path and logs.name.startswith("edgerec-demo-logs-")  # ... its logs are not
    assert sorted(p.name for p in logs.iterdir()) == ["edge-DE.log", "edge-GB.log", "origin.log"]
    assert "origin listening" in (logs / "origin.log").read_text()
    assert "serving data version" in (logs / "edge-GB.log").read_text()
