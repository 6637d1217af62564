"""Terraform's own tools over infra/terraform: formatting, and init+validate where providers can be had."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from infra_support import ENVS, MODULE_NAMES, MODULES, TERRAFORM

ROOTS = [MODULES / name for name in MODULE_NAMES] + [ENVS / "example"]

# What `terraform init` says when no registry or mirror can provide hashicorp/aws.
_NO_PROVIDER_MARKERS = (
    "Failed to query available provider packages",
    "could not connect to registry",
    "Failed to install provider",
    "no available releases match",
)


def test_terraform_files_are_canonically_formatted(terraform):
    rc, out, err = terraform.run(["fmt", "-check", "-recursive", "-list=true", "-no-color", str(TERRAFORM)], TERRAFORM)
    assert rc == 0, f"terraform fmt would rewrite (run `terraform fmt -recursive infra/terraform`):\n{out}{err}"


@pytest.fixture(scope="session")
def providers_available(terraform, tmp_path_factory) -> bool:
    """Probe once (about 1 s): can `terraform init` get hashicorp/aws here?"""
    probe = tmp_path_factory.mktemp("tf-probe")
    (probe / "main.tf").write_text(
        'terraform {\n  required_providers {\n    aws = {\n      source  = "hashicorp/aws"\n'
        '      version = ">= 5.60.0, < 7.0.0"\n    }\n  }\n}\n'
    )
    rc, out, err = terraform.run(["init", "-backend=false", "-input=false", "-no-color"], probe)
    if rc == 0:
        return True
    text = out + err
    if any(m in text for m in _NO_PROVIDER_MARKERS):
        first = next((line.strip() for line in text.splitlines() if "registry" in line or "connect" in line), "")
        pytest.skip(f"hashicorp/aws provider cannot be installed (no registry or mirror reachable): {first}")
    pytest.fail(f"terraform init failed for another reason:\n{text}")


@pytest.mark.parametrize("root", ROOTS, ids=[p.relative_to(TERRAFORM).as_posix() for p in ROOTS])
def test_terraform_init_and_validate_succeed(terraform, providers_available, root: Path, tmp_path):
    work = tmp_path / "tf"
    # Copy the whole tree so relative module sources (../../modules) resolve, without writing .terraform into the repo.
    shutil.copytree(TERRAFORM, work, ignore=shutil.ignore_patterns(".terraform", "*.tfstate*"))
    cwd = work / root.relative_to(TERRAFORM)
    rc, out, err = terraform.run(["init", "-backend=false", "-input=false", "-no-color"], cwd)
    assert rc == 0, out + err
    rc, out, err = terraform.run(["validate", "-no-color"], cwd)
    assert rc == 0, out + err


def test_the_example_plans_offline_with_mocked_providers(terraform, providers_available, tmp_path):
    """envs/example/tests/example.tftest.hcl plans the whole deployment with every AWS provider mocked: what validate
    cannot see (for_each keys, the containers modules/service merges, names the runbooks use) must plan."""
    work = tmp_path / "tf"
    shutil.copytree(TERRAFORM, work, ignore=shutil.ignore_patterns(".terraform", "*.tfstate*"))
    cwd = work / "envs" / "example"
    rc, out, err = terraform.run(["init", "-backend=false", "-input=false", "-no-color"], cwd)
    assert rc == 0, out + err
    rc, out, err = terraform.run(["test", "-no-color"], cwd)
    assert rc == 0 and "1 passed, 0 failed" in out, out + err
