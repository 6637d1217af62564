"""checkov (offline, --skip-download) over infra/terraform: no failed check, and every skip is justified inline."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
from infra_support import REPO, TERRAFORM

SKIP_RE = re.compile(r"#\s*checkov:skip=([A-Z0-9_]+)(?::(.*))?")


def _checkov(checkov_cmd: list[str], directory: Path, framework: str) -> dict:
    """checkov's JSON report of one framework's checks of the files in `directory`."""
    proc = subprocess.run(
        [*checkov_cmd, "-d", str(directory), "--framework", framework, "--skip-download", "--compact", "-o", "json"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.stdout.strip(), f"checkov printed nothing (rc={proc.returncode}):\n{proc.stderr[-3000:]}"
    report = json.loads(proc.stdout)
    if isinstance(report, list):  # one entry per framework
        report = next(r for r in report if r.get("check_type") == framework)
    return report


@pytest.fixture(scope="session")
def checkov_report(checkov_cmd) -> dict:
    return _checkov(checkov_cmd, TERRAFORM, "terraform")


def test_checkov_finds_no_failed_check(checkov_report):
    results = checkov_report["results"]
    failed = [
        f"{c['check_id']} {c['resource']} ({c['file_path']}:{c['file_line_range']})" for c in results["failed_checks"]
    ]
    assert not failed, "checkov failed checks:\n" + "\n".join(failed)
    summary = checkov_report["summary"]
    assert summary["failed"] == 0
    assert summary["passed"] > 100, f"checkov scanned suspiciously little: {summary}"


def test_checkov_skips_are_few_and_justified_inline():
    skips = []
    for tf in TERRAFORM.rglob("*.tf"):
        for lineno, line in enumerate(tf.read_text().splitlines(), 1):
            m = SKIP_RE.search(line)
            if m:
                skips.append((tf.relative_to(TERRAFORM), lineno, m.group(1), (m.group(2) or "").strip()))
    unjustified = [s for s in skips if len(s[3]) < 40]
    assert not unjustified, f"checkov skips need a real reason next to the resource: {unjustified}"
    assert len(skips) <= 12, f"too many checkov skips ({len(skips)}): fix the resources instead"


def test_checkov_report_counts_only_declared_skips(checkov_report):
    declared = set()
    for tf in TERRAFORM.rglob("*.tf"):
        declared.update(m.group(1) for m in SKIP_RE.finditer(tf.read_text()))
    skipped = {c["check_id"] for c in checkov_report["results"]["skipped_checks"]}
    assert skipped <= declared, f"checkov skipped checks nobody declared: {skipped - declared}"


# --- the Kubernetes manifests, as kustomize renders them ------------------------------------------------------

K8S_SKIP_RE = re.compile(r"^checkov\.io/skip\d+$")


@pytest.fixture(scope="session")
def rendered_k8s(tmp_path_factory) -> list[dict]:
    """infra/k8s rendered offline (every overlay at once), written where checkov reads it."""
    import shutil

    import yaml

    from tests.conftest import missing_part

    kubectl = shutil.which("kubectl")
    if kubectl is None:
        missing_part("kubectl not on PATH: it renders the kustomizations (`kubectl kustomize`)")
    proc = subprocess.run(
        [kubectl, "kustomize", str(REPO / "infra" / "k8s")], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    (tmp_path_factory.getbasetemp() / "k8s-rendered").mkdir(exist_ok=True)
    (tmp_path_factory.getbasetemp() / "k8s-rendered" / "all.yaml").write_text(proc.stdout)
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


@pytest.fixture(scope="session")
def checkov_k8s_report(checkov_cmd, rendered_k8s, tmp_path_factory) -> dict:
    return _checkov(checkov_cmd, tmp_path_factory.getbasetemp() / "k8s-rendered", "kubernetes")


def _k8s_skips(objects: list[dict]) -> list[tuple[str, str, str]]:
    """(object, check id, reason) of every `checkov.io/skipN: ID=reason` annotation of the rendered objects."""
    skips = []
    for o in objects:
        for key, value in (o["metadata"].get("annotations") or {}).items():
            if K8S_SKIP_RE.match(key):
                check_id, _, reason = value.partition("=")
                skips.append((f"{o['kind']}/{o['metadata']['name']}", check_id.strip(), reason.strip()))
    return skips


def test_checkov_finds_no_failed_check_in_the_kubernetes_manifests(checkov_k8s_report, rendered_k8s):
    results = checkov_k8s_report["results"]
    failed = [f"{c['check_id']} {c['resource']}" for c in results["failed_checks"]]
    assert not failed, "checkov failed checks:\n" + "\n".join(failed)
    assert checkov_k8s_report["summary"]["passed"] > 200, checkov_k8s_report["summary"]
    # Every Deployment was scanned (the origin and each region's edges).
    scanned = {c["resource"] for c in results["passed_checks"]}
    deployments = {
        f"Deployment.{o['metadata']['namespace']}.{o['metadata']['name']}"
        for o in rendered_k8s
        if o["kind"] == "Deployment"
    }
    assert len(deployments) >= 3 and deployments <= scanned, deployments - scanned


def test_checkov_kubernetes_skips_are_few_justified_and_the_only_ones(checkov_k8s_report, rendered_k8s):
    skips = _k8s_skips(rendered_k8s)
    unjustified = [s for s in skips if len(s[2]) < 40]
    assert not unjustified, f"checkov skips need a real reason in the annotation: {unjustified}"
    assert len({s[1] for s in skips}) <= 4, f"too many kinds of checkov skips: {sorted({s[1] for s in skips})}"
    skipped = {c["check_id"] for c in checkov_k8s_report["results"]["skipped_checks"]}
    assert skipped <= {s[1] for s in skips}, f"checkov skipped checks nobody declared: {skipped}"
