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


def test_no_token_key_or_shopper_id_appears_in_the_logs_of_a_full_demo_run(tmp_path):
    """The demo at DEBUG, serving: every secret its services hold (read from their environment) and every shopper
    id it used, looked for in every log line the services wrote."""
    import os
    import signal

    import psutil

    from edgerec.cli.services import http_json

    env = {**os.environ, "EDGEREC_LOG_LEVEL": "DEBUG"}
    demo = subprocess.Popen([sys.executable, "-m", "edgerec", "demo", "--serve", "--workdir", str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
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
        assert http_json(edges[0], "POST", "/v1/recommendations", {"shopper_id": "shopper-in-the-log-test-42"})[0] == 200
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
