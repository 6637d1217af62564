"""`edgerec demo` runs end to end as a new user would run it: once plain (without --workdir, its temporary
directories under the test's TMPDIR), once serving at DEBUG for the search of its logs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def plain_demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess, Path]:
    """One `edgerec demo` without --workdir, as the README runs it: (its result, the TMPDIR it ran with)."""
    tmp = tmp_path_factory.mktemp("demo")
    env = {**os.environ, "TMPDIR": str(tmp)}  # its temporary directories land here, and are checked here
    result = subprocess.run(
        [sys.executable, "-m", "edgerec", "demo"], capture_output=True, text=True, timeout=240, env=env
    )
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    return result, tmp


def test_demo_shows_two_regions_and_a_propagated_change_and_exits_0(plain_demo):
    out = plain_demo[0].stdout
    for region in ("GB", "DE"):
        assert re.search(rf"^ edge {region} \(http://127\.0\.0\.1:\d+\)$", out, re.M), out
        assert re.search(rf"^  {region}: {region}-\S+ [\d.]+ -> [\d.]+ \w{{3}} served at data v\d+", out, re.M), out
        assert re.search(rf"^  edge {region}: n=300 p50 [\d.]+ ms", out, re.M), out
    assert out.count("    ") >= 2 * 3 * 5  # five offers for each of three shoppers per region


def test_the_demo_says_its_rate_limits_are_off_and_keeps_its_logs_after_it_exits(plain_demo):
    result, tmp_path = plain_demo
    out = result.stdout
    assert len(re.findall(r"^ +rate limits are off in the demo: .+ loopback address", out, re.M)) == 1, out
    work = Path(re.search(r"^\[1/6\] generating a synthetic shop .*\((.+)\)$", out, re.M).group(1))
    logs = Path(re.search(r"^ +service logs: (.+) \(kept after the demo exits\)$", out, re.M).group(1))
    assert f"their logs stay in {logs}" in out.splitlines()[-1]
    assert not work.exists()  # the temporary work directory is gone ...
    assert logs.parent == tmp_path and logs.name.startswith("edgerec-demo-logs-")  # ... its logs are not
    assert sorted(p.name for p in logs.iterdir()) == ["edge-DE.log", "edge-GB.log", "origin.log"]
    assert "origin listening" in (logs / "origin.log").read_text()
    assert "serving data version" in (logs / "edge-GB.log").read_text()


def test_no_token_key_or_shopper_id_appears_in_the_logs_of_a_full_demo_run(tmp_path):
    """The demo at DEBUG, serving: every secret its services hold (read from their environment) and every shopper
    id it used, looked for in every log line the services wrote."""
    import signal

    import psutil

    from edgerec.cli.process import http_json

    env = {**os.environ, "EDGEREC_LOG_LEVEL": "DEBUG"}
    demo = subprocess.Popen(
        [sys.executable, "-m", "edgerec", "demo", "--serve", "--workdir", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    out, edges = [], []
    try:
        for line in demo.stdout:  # until the demo says it serves
            out.append(line)
            if line.startswith("edge "):
                edges.append(line.split()[2])
            if line.startswith("serving until interrupted"):
                break
        assert edges, "".join(out)
        secrets = set()
        for child in psutil.Process(demo.pid).children(recursive=True):
            for name, value in child.environ().items():
                if name in ("EDGEREC_ADMIN_TOKEN", "EDGEREC_SYNC_TOKEN", "EDGEREC_PSEUDONYM_KEY", "EDGEREC_CDN_SECRET"):
                    secrets.update(v for v in value.split(",") if v)
                elif name == "EDGEREC_REGION_TOKENS":
                    secrets.update(t for item in value.split(",") for t in item.split("=", 1)[1].split("|"))
        assert len(secrets) >= 4  # the admin token, two region tokens, the pseudonym key
        assert (
            http_json(edges[0], "POST", "/v1/recommendations", {"shopper_id": "shopper-in-the-log-test-42"})[0] == 200
        )
    finally:
        demo.send_signal(signal.SIGINT)
        rest, _ = demo.communicate(timeout=60)
    assert demo.returncode == 0, "".join(out) + rest
    shoppers = set(re.findall(r"shopper (s-[0-9a-f]+)", "".join(out))) | {"shopper-in-the-log-test-42"}
    assert len(shoppers) >= 4
    key_body = "".join((tmp_path / "keys" / "signing_key.pem").read_text().splitlines()[1:-1])
    logs = "".join(p.read_text(errors="replace") for p in (tmp_path / "logs").glob("*.log"))
    assert "origin listening" in logs and logs.count("serving data version") >= 2  # every service's own lines
    leaked = [s for s in (*secrets, *shoppers, key_body) if s in logs]
    assert leaked == []
