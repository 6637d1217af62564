"""`edgerec demo` runs end to end as a new user would run it: once plain (without --workdir, its temporary
directories under the test's TMPDIR), once serving at DEBUG, which the admin commands are then run against with the
settings it prints, and whose logs are searched for secrets and shopper ids."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from edgerec.cli.process import http_json

REGIONS = ("GB", "DE")


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


def test_the_demo_imports_its_order_history_and_answers_known_shoppers_by_id_alone(plain_demo):
    out = plain_demo[0].stdout
    assert re.search(
        r"^ +edgerec profiles import --orders transactions\.csv\.gz: imported \d+ purchase events of \d+ shoppers",
        out,
        re.M,
    ), out
    for region in REGIONS:
        section = out.split(f" edge {region} (", 1)[1].split("\n edge ", 1)[0].split("[6/6]", 1)[0]
        assert re.search(r"^  anonymous -> profile miss, ", section, re.M), section
        hits = re.findall(r"^  shopper (\d+) \((\d+) purchases imported\) -> profile hit, .*$", section, re.M)
        assert len(hits) == 3 and all(int(n) > 0 for _, n in hits), section
    assert "differs from the anonymous answer" in out, out


@dataclass
class ServedDemo:
    """A running `edgerec demo --serve --workdir DIR` at DEBUG and what it printed until it said it serves."""

    process: subprocess.Popen
    workdir: Path
    out: list[str]
    edges: dict[str, str] = field(default_factory=dict)
    shoppers: dict[str, list[str]] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        """`edgerec ARGS` as a person runs it after copying the printed `env` lines, and no other EDGEREC_ setting."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEREC_")}
        return subprocess.run(
            [sys.executable, "-m", "edgerec", *args],
            capture_output=True,
            text=True,
            timeout=60,
            env={**env, **self.env},
        )


@pytest.fixture(scope="module")
def served_demo(tmp_path_factory: pytest.TempPathFactory):
    workdir = tmp_path_factory.mktemp("served-demo")
    demo = subprocess.Popen(
        [sys.executable, "-m", "edgerec", "demo", "--serve", "--workdir", str(workdir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "EDGEREC_LOG_LEVEL": "DEBUG"},
    )
    served = ServedDemo(demo, workdir, [])
    try:
        for line in demo.stdout:  # until the demo says it serves
            served.out.append(line)
            if m := re.fullmatch(r"edge (\w+) (\S+)\n", line):
                served.edges[m[1]] = m[2]
            elif m := re.fullmatch(r"shopper (\w+) (\S+)\n", line):
                served.shoppers.setdefault(m[1], []).append(m[2])
            elif m := re.fullmatch(r"env (\S+) (\S+)\n", line):
                served.env[m[1]] = m[2]
            if line.startswith("serving until interrupted"):
                break
        assert served.out and served.out[-1].startswith("serving until interrupted"), "".join(served.out)
        yield served
    finally:
        if demo.poll() is None:
            demo.send_signal(signal.SIGINT)
            demo.communicate(timeout=60)


def recommend(served: ServedDemo, region: str, shopper_id: str | None = None) -> dict:
    request = {"region": region, "k": 5, **({"shopper_id": shopper_id} if shopper_id else {})}
    status, answer = http_json(served.edges[region], "POST", "/v1/recommendations", request)
    assert status == 200, answer
    return answer


def offer_ids(answer: dict) -> list[str]:
    return [o["offer_id"] for o in answer["offers"]]


def test_serve_prints_its_services_three_shoppers_per_region_and_the_admin_settings(served_demo):
    lines = [line.rstrip("\n") for line in served_demo.out]
    origins = [line for line in lines if re.fullmatch(r"origin http://127\.0\.0\.1:\d+", line)]
    tokens = [line.split(" ", 1)[1] for line in lines if re.fullmatch(r"admin-token \S+", line)]
    assert len(origins) == 1 and len(tokens) == 1, lines
    for region in REGIONS:
        assert [line for line in lines if line.startswith(f"edge {region} ")] == [
            f"edge {region} {served_demo.edges[region]}"
        ]
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", served_demo.edges[region])
        assert len(served_demo.shoppers[region]) == 3 and all(s.isdigit() for s in served_demo.shoppers[region])
    assert sorted(served_demo.shoppers) == sorted(REGIONS)
    assert served_demo.env == {
        "EDGEREC_ORIGIN_URL": origins[0].split(" ", 1)[1],
        "EDGEREC_ADMIN_TOKEN": tokens[0],
        "EDGEREC_PSEUDONYM_KEY": served_demo.env.get("EDGEREC_PSEUDONYM_KEY", "(missing)"),
    }
    assert len(served_demo.env["EDGEREC_PSEUDONYM_KEY"]) >= 16
    assert len([line for line in lines if line.startswith("env ")]) == 3


def test_the_served_edges_personalize_the_printed_shoppers_by_their_id_alone(served_demo):
    for region in REGIONS:
        anonymous = recommend(served_demo, region)
        assert anonymous["profile"] == "miss"
        answers = [recommend(served_demo, region, shopper) for shopper in served_demo.shoppers[region]]
        assert [a["profile"] for a in answers] == ["hit"] * 3, answers
        assert any(offer_ids(a) != offer_ids(anonymous) for a in answers), (anonymous, answers)


def test_profiles_export_with_the_printed_settings_returns_the_shoppers_imported_history(served_demo):
    shopper = served_demo.shoppers["GB"][0]
    imported = re.search(rf"^  shopper {shopper} \((\d+) purchases imported\)", "".join(served_demo.out), re.M)
    assert imported, "".join(served_demo.out)
    result = served_demo.cli("profiles", "export", "--shopper", shopper)
    assert result.returncode == 0, result.stderr
    profile = json.loads(result.stdout)["profile"]
    assert profile["regions"] == ["GB"]
    assert len(profile["events"]) == int(imported[1])  # one purchase event per item per invoice, all of them
    assert all(e["kind"] == "purchase" and e["key"].startswith("order:") for e in profile["events"])
    assert {e["item"] for e in profile["events"]} == set(profile["summary"]["items"])


def test_events_erase_with_the_printed_settings_makes_the_edge_answer_the_shopper_anonymously(served_demo):
    shopper = served_demo.shoppers["DE"][-1]
    assert recommend(served_demo, "DE", shopper)["profile"] == "hit"
    result = served_demo.cli("events", "erase", "--shopper", shopper)
    assert result.returncode == 0, result.stderr
    assert re.match(r"erased \d+ events and the profile \(held, [1-9]\d* history events\)", result.stdout), result
    deadline = time.monotonic() + 30  # the erasure reaches the edge by the signed sync's long-poll
    while (answer := recommend(served_demo, "DE", shopper))["profile"] != "miss":
        assert time.monotonic() < deadline, f"edge DE still answers {answer['profile']} for the erased shopper"
        time.sleep(0.05)
    assert offer_ids(answer) == offer_ids(recommend(served_demo, "DE"))
    after = served_demo.cli("profiles", "export", "--shopper", shopper)
    if after.returncode == 0:  # the impressions of this test's own requests may reach the origin after the erasure
        assert json.loads(after.stdout)["profile"] is None, after.stdout
    else:
        assert after.returncode == 1 and "holds no profile and no events" in after.stderr, after


def test_no_token_key_or_shopper_id_appears_in_the_logs_and_the_served_demo_stops_on_sigint(served_demo):
    """Every secret the demo's services hold (read from their environment) and every shopper id it used, looked for
    in every log line the services wrote at DEBUG (the tests above ran the admin commands against them); last in
    this file, since it stops the demo."""
    import psutil

    demo = served_demo.process
    secrets = set()
    for child in psutil.Process(demo.pid).children(recursive=True):
        for name, value in child.environ().items():
            if name in ("EDGEREC_ADMIN_TOKEN", "EDGEREC_SYNC_TOKEN", "EDGEREC_PSEUDONYM_KEY", "EDGEREC_CDN_SECRET"):
                secrets.update(v for v in value.split(",") if v)
            elif name == "EDGEREC_REGION_TOKENS":
                secrets.update(t for item in value.split(",") for t in item.split("=", 1)[1].split("|"))
    assert len(secrets) >= 4  # the admin token, two region tokens, the pseudonym key
    assert (
        http_json(served_demo.edges["GB"], "POST", "/v1/recommendations", {"shopper_id": "shopper-in-the-log-test-42"})[
            0
        ]
        == 200
    )
    demo.send_signal(signal.SIGINT)
    rest, _ = demo.communicate(timeout=60)
    out = "".join(served_demo.out)
    assert demo.returncode == 0, out + rest
    shoppers = {s for ids in served_demo.shoppers.values() for s in ids} | {"shopper-in-the-log-test-42"}
    assert len(shoppers) == 7
    key_body = "".join((served_demo.workdir / "keys" / "signing_key.pem").read_text().splitlines()[1:-1])
    logs = "".join(p.read_text(errors="replace") for p in (served_demo.workdir / "logs").glob("*.log"))
    assert "origin listening" in logs and logs.count("serving data version") >= 2  # every service's own lines
    # A shopper id is a CustomerID (digits): looked for as a whole token, not inside a longer number.
    leaked = [s for s in (*secrets, key_body) if s in logs]
    leaked += [s for s in shoppers if re.search(rf"(?<![\w.]){re.escape(s)}(?![\w.])", logs)]
    assert leaked == []
