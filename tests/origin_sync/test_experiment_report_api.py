"""The experiment report through a real origin and the `edgerec` command: revenue per currency (never one sum across
currencies), the feedback no impression explains, a definition without model manifests, and a reader that closes
the command's stdout early."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from edgerec.cli.process import http_call, http_json
from origin_sync.wire.events import encode_batch
from tests.conftest import REPO


def _event(
    kind: str,
    request_id: str,
    region: str,
    variant: str | None = None,
    value: float | None = None,
    currency: str | None = None,
) -> dict:
    return {
        "id": f"{kind}-{request_id}-{time.monotonic_ns()}",
        "kind": kind,
        "ts": time.time(),
        "region": region,
        "request_id": request_id,
        "shopper": None,
        "experiment": "ab" if kind == "impression" else None,
        "variant": variant,
        "offer_ids": ["o"],
        "value": value,
        "currency": currency,
        "model_version": None,
        "data_version": None,
        "slot": None,
    }


@pytest.fixture(scope="module")
def reported(module_cluster):
    """An experiment in GB and DE whose treatment names a published model, with impressions and purchases in GBP
    (GB) and EUR (DE) shipped as an edge would, and three feedback events no impression explains."""
    cluster = module_cluster
    published = cluster.publish()
    auth = {"Authorization": f"Bearer {cluster.admin_token}"}
    status, answer = http_json(
        cluster.origin.url,
        "PUT",
        "/v1/admin/experiments/ab",
        {
            "variants": [{"name": "control"}, {"name": "treatment", "model": published["model_version"]}],
            "regions": ["GB", "DE"],
        },
        auth,
    )
    assert status == 200, answer
    events = []
    for variant in ("control", "treatment"):
        for i in range(40):
            gb, de = f"{variant}-gb-{i}", f"{variant}-de-{i}"
            events += [_event("impression", gb, "GB", variant), _event("impression", de, "DE", variant)]
            if i % 4 == 0:
                events.append(_event("purchase", gb, "GB", value=10.0, currency="GBP"))
            if i % 2 == 0:
                events.append(
                    _event("purchase", de, "DE", value=30.0 if variant == "treatment" else 20.0, currency="EUR")
                )
    events += [
        _event("click", "lost-1", "GB"),
        _event("click", "lost-2", "DE"),
        _event("purchase", "lost-3", "GB", value=99.0, currency="GBP"),
    ]
    headers = {"Authorization": f"Bearer {cluster.sync_token}", "Content-Type": "application/x-msgpack"}
    status, _, raw = http_call(
        cluster.origin.url, "POST", "/v1/sync/events", encode_batch("b1", ["DE", "GB"], events), headers
    )
    assert status == 200, raw
    status, _, raw = http_call(cluster.origin.url, "GET", "/v1/admin/experiments/ab/report", headers=auth)
    assert status == 200, raw
    return cluster, published, raw


def test_revenue_is_reported_per_currency_and_never_summed(reported):
    _, _, raw = reported
    report = json.loads(raw)
    assert report["currencies"] == ["EUR", "GBP"]
    treatment, control = report["variants"]["treatment"], report["variants"]["control"]
    assert treatment["revenue"] == {"EUR": 600.0, "GBP": 100.0} and control["revenue"] == {"EUR": 400.0, "GBP": 100.0}
    # Each currency over the impressions of the regions that pay in it (40 per variant each), not all 80.
    assert treatment["revenue_per_impression"]["EUR"]["impressions"] == 40
    assert treatment["revenue_per_impression"]["EUR"]["mean"] == pytest.approx(15.0)
    assert treatment["revenue_per_impression"]["GBP"]["mean"] == pytest.approx(2.5)
    assert control["revenue_per_impression"]["EUR"]["mean"] == pytest.approx(10.0)
    tests = treatment["vs_control"]["revenue_per_impression"]
    assert set(tests) == {"EUR", "GBP"} and tests["GBP"]["p_value"] == pytest.approx(1.0)
    assert tests["EUR"]["uplift"] == pytest.approx(0.5)
    assert report["revenue_by_currency"]["EUR"]["regions"] == ["DE"]
    assert report["revenue_by_currency"]["GBP"]["regions"] == ["GB"]


def test_the_report_counts_the_feedback_no_impression_explains(reported):
    cluster, _, raw = reported
    report = json.loads(raw)
    assert report["unattributed"] == 3 and report["unattributed_by_kind"] == {"click": 2, "purchase": 1}
    assert report["variants"]["control"]["revenue"]["GBP"] == 100.0  # the unattributed 99 GBP went nowhere
    _, _, metrics = http_call(cluster.origin.url, "GET", "/metrics")
    assert b'edgerec_origin_events_unattributed_total{kind="click"} 2.0' in metrics


def test_the_report_names_the_models_but_carries_no_manifest(reported):
    _, published, raw = reported
    definition = json.loads(raw)["definition"]
    ref = definition["variants"][1]["model_ref"]
    assert set(ref) == {"version", "sha256"} and ref["version"] == published["model_version"]
    assert definition["variants"][0]["model_ref"] is None
    assert len(raw) < 16_000, len(raw)  # it was 158 KB with the manifest's item list


def _edgerec_into_a_closed_pipe(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    """Run `python -m edgerec ARGS` with stdout a pipe whose reader is gone before the command writes (what `| head`
    leaves once it has read its lines)."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run(
            [sys.executable, "-m", "edgerec", *args],
            stdout=write_end,
            stderr=subprocess.PIPE,
            env=env,
            cwd=REPO,
            text=True,
            timeout=120,
        )
    finally:
        os.close(write_end)


@pytest.mark.parametrize(
    "args",
    [
        ["experiments", "report", "ab", "--json"],
        ["experiments", "report", "ab"],
        ["experiments", "list", "--json"],
        ["--help"],
        ["origin", "keygen", "--out", "{tmp}"],
    ],
    ids=["report-json", "report-text", "list-json", "help", "keygen"],
)
def test_a_reader_that_goes_away_ends_any_command_quietly(reported, args, tmp_path):
    cluster, _, _ = reported
    env = {**os.environ, "EDGEREC_ADMIN_TOKEN": cluster.admin_token, "EDGEREC_ORIGIN_URL": cluster.origin.url}
    result = _edgerec_into_a_closed_pipe([a.replace("{tmp}", str(tmp_path / "keys")) for a in args], env)
    # 128 + SIGPIPE, as a shell reports a command its reader left; argparse swallows a failed write of --help itself.
    assert result.returncode == 141 or (args == ["--help"] and result.returncode == 0), result.stderr
    assert "Traceback" not in result.stderr and "BrokenPipe" not in result.stderr, result.stderr
    assert "Exception ignored" not in result.stderr, result.stderr


def test_report_json_piped_into_head_ends_quietly(reported):
    """The shell form: `edgerec experiments report ID --json | head -n 3`."""
    cluster, _, _ = reported
    env = {
        **os.environ,
        "EDGEREC_ADMIN_TOKEN": cluster.admin_token,
        "EDGEREC_ORIGIN_URL": cluster.origin.url,
        "PYTHONPATH": os.environ.get("PYTHONPATH", str(REPO)),
    }
    result = subprocess.run(
        ["bash", "-c", f"set -o pipefail; {sys.executable} -m edgerec experiments report ab --json | head -n 3"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.stdout.splitlines()[0] == "{" and len(result.stdout.splitlines()) == 3
    assert result.returncode in (0, 141) and result.stderr == "", result.stderr
