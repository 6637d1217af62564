"""`edgerec demo` runs end to end as a new user would run it."""

from __future__ import annotations

import re
import subprocess
import sys


def test_demo_shows_two_regions_and_a_propagated_change_and_exits_0(tmp_path):
    result = subprocess.run([sys.executable, "-m", "edgerec", "demo", "--workdir", str(tmp_path)],
                            capture_output=True, text=True, timeout=240)
    out = result.stdout
    assert result.returncode == 0, out + result.stderr[-3000:]
    for region in ("GB", "DE"):
        assert re.search(rf"^ edge {region} \(http://127\.0\.0\.1:\d+\)$", out, re.M), out
        assert re.search(rf"^  {region}: {region}-\S+ [\d.]+ -> [\d.]+ \w{{3}} served at data v\d+", out, re.M), out
        assert re.search(rf"^  edge {region}: n=300 p50 [\d.]+ ms", out, re.M), out
    assert out.count("    ") >= 2 * 3 * 5  # five offers for each of three shoppers per region
