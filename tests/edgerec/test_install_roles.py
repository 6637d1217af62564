"""Each role's extra (pyproject.toml) brings what that role imports, and no role needs another's packages.

The checks run every module of a role in a fresh interpreter in which every installed distribution that the
role's requirements do not bring (followed through their own requirements) cannot be imported, as in an
image that installed only `edgerec[ROLE]`.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
OURS = {"edgerec", "edge_node", "origin_sync", "models", "benchmarks"}

# What a role runs: the packages walked module by module, and single modules.
ROLE_MODULES = {
    "edge": (
        ["edge_node", "origin_sync.replica", "origin_sync.wire", "edgerec.core"],
        ["models.runtime", "models.bundle", "edgerec.cli.main"],
    ),
    "origin": (
        ["origin_sync.origin", "origin_sync.wire", "edgerec.core"],
        [
            "edgerec.cli.main",
            "edgerec.cli.admin",
            "edgerec.cli.offers_import",
            "edgerec.cli.models_admin",
            "edgerec.cli.profiles_admin",
        ],
    ),
    "train": (["models"], ["edgerec.cli.main"]),
}


def _name(requirement: str) -> str:
    return re.sub(r"[-_.]+", "-", Requirement(requirement).name).lower()


def _closure(requirements: list[str], extras_of_ours: set[str] = frozenset()) -> set[str]:
    """The distributions these requirements install, through their own requirements (markers evaluated)."""
    seen: set[str] = set()
    todo = [(r, ()) for r in requirements]
    while todo:
        text, extras = todo.pop()
        requirement = Requirement(text)
        if requirement.marker is not None and not any(
            requirement.marker.evaluate({"extra": e}) for e in (extras or ("",))
        ):
            continue
        name = _name(text)
        if name == "edgerec":  # a self-reference: edgerec[origin,train]
            for extra in requirement.extras:
                todo += [(r, ()) for r in PROJECT["optional-dependencies"][extra]]
            continue
        if name in seen:
            continue
        seen.add(name)
        try:
            todo += [(r, tuple(requirement.extras)) for r in metadata.requires(name) or []]
        except metadata.PackageNotFoundError:
            pass
    return seen


def blocked_imports(role: str) -> set[str]:
    """Top-level import names of installed distributions that `edgerec[role]` would not install."""
    allowed = _closure(PROJECT["dependencies"] + PROJECT["optional-dependencies"][role])
    blocked = set()
    for top, distributions in metadata.packages_distributions().items():
        if top in OURS or top.startswith("_"):
            continue
        if not any(re.sub(r"[-_.]+", "-", d).lower() in allowed for d in distributions):
            blocked.add(top)
    return blocked


def run_as_role(role: str, code: str, blocked: set[str] | None = None) -> subprocess.CompletedProcess:
    blocked = blocked_imports(role) if blocked is None else blocked
    # A None in sys.modules is how Python spells "absent": import raises ModuleNotFoundError, find_spec says None.
    prelude = textwrap.dedent(f"""
        import sys
        for name in {sorted(blocked)!r}:
            sys.modules[name] = None
    """)
    return subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code)], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize("role", sorted(ROLE_MODULES))
def test_every_module_of_a_role_imports_with_only_that_roles_extra(role):
    packages, modules = ROLE_MODULES[role]
    blocked = blocked_imports(role)
    # The check must be able to fail: the heavy packages of other roles are among the blocked ones.
    others = {
        "edge": {"onnx", "asyncpg", "nats", "matplotlib", "locust"},
        "origin": {"onnx", "locust"},
        "train": {"asyncpg", "nats", "locust"},
    }[role]
    assert others <= blocked, f"{role}: {sorted(others - blocked)} would be importable"
    result = run_as_role(
        role,
        f"""
        import importlib, pkgutil
        names = {modules!r}
        for package in {packages!r}:
            module = importlib.import_module(package)
            names.append(package)
            names += [info.name for info in pkgutil.walk_packages(module.__path__, package + ".")]
        for name in names:
            importlib.import_module(name)
        print(len(names), "modules")
    """,
        blocked,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert int(result.stdout.split()[0]) >= len(modules) + len(packages)


def test_edge_role_builds_the_cli_without_other_roles_packages():
    result = run_as_role(
        "edge",
        """
        from edgerec.cli.main import build_parser
        args = build_parser().parse_args(["edge", "serve", "--port", "0"])
        print(args.command, args.action)
    """,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["edge", "serve"]


def test_a_command_whose_extra_is_missing_says_which_extra_to_install(tmp_path):
    result = run_as_role(
        "edge",
        f"""
        import sys
        from edgerec.cli.main import main
        sys.exit(main(["model", "train", "--data", {str(tmp_path / "orders.csv")!r}, "--out", {str(tmp_path)!r}]))
    """,
    )
    assert result.returncode == 2, result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("edgerec: this command needs the `"), lines
    assert "pip install 'edgerec[train]'" in lines[-1]
    assert "Traceback" not in result.stderr


def test_version_is_the_installed_distributions():
    result = subprocess.run(
        [sys.executable, "-m", "edgerec", "--version"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"edgerec {metadata.version('edgerec')}"
