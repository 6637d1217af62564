"""The peers: MLServer and PyTriton serving the same ONNX ranker, candidates and top-k, each from a venv of its own.

Their pins (MLServer: FastAPI, pydantic, uvloop < 0.22 for its issue #2286; PyTriton: numpy < 2, its Triton
binaries) must not mix with edgerec's, so the harness makes a venv for each once, in a cache directory keyed
by its requirements, and reuses it on later runs. Both speak the KServe V2 (Open Inference) protocol and run
the scorer of peer_runtime/scoring.py.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

from edgerec.cli.process import Service, free_port

from .traffic import PEER_MODEL

RUNTIME_DIR = Path(__file__).resolve().parent / "peer_runtime"
MLSERVER_VERSION = "1.7.1"
PYTRITON_VERSION = "0.7.0"


@dataclass(frozen=True)
class InstanceSettings:
    """What every instance of a peer serves, and the knobs of one peer."""

    bundle_dir: Path
    offers: list[dict[str, Any]]
    mlserver_parallel_workers: int = 0


@dataclass(frozen=True)
class Peer:
    """One peer model server: what its venv holds, how one instance of it starts, and where it says it is ready."""

    target: str  # its target in the report
    label: str  # "MLServer 1.7.1"
    ready_paths: tuple[str, ...]
    requirements: Callable[[], list[str]]
    instance: Callable[[Path, Path, int, InstanceSettings], tuple[Service, str]]  # (venv python, workdir, index)
    version_probe: str  # Python printing the versions installed in its venv

    def default_venv_dir(self) -> Path:
        cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        tag = hashlib.sha256(" ".join(self.requirements()).encode()).hexdigest()[:10]
        return cache / "edgerec-bench" / f"{self.target.replace('_', '-')}-{tag}"

    def ensure_venv(self, venv: Path, log_path: Path) -> Path:
        """The venv's python, the venv created on first use (pip, a minute or so) and reused while its
        requirements hold."""
        marker = venv / ".edgerec-requirements"
        wanted = "\n".join(self.requirements())
        python = venv / "bin" / "python"
        if python.exists() and marker.exists() and marker.read_text() == wanted:
            return python
        packages = " ".join(self.requirements())
        print(
            f"  creating {self.label}'s venv at {venv} (once; reused by later runs): pip install {packages}", flush=True
        )
        if venv.exists():
            shutil.rmtree(venv)
        venv.parent.mkdir(parents=True, exist_ok=True)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log:
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, stdout=log, stderr=subprocess.STDOUT)
            pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
            result = subprocess.run([*pip, *self.requirements()], stdout=log, stderr=subprocess.STDOUT)
        if result.returncode != 0:
            raise RuntimeError(f"pip install for {self.label} failed (exit {result.returncode}); see {log_path}")
        marker.write_text(wanted)
        return python

    def versions(self, python: Path) -> str | None:
        try:
            out = subprocess.run([str(python), "-c", self.version_probe], capture_output=True, text=True, timeout=60)
            return out.stdout.strip() or None
        except (OSError, subprocess.SubprocessError):
            return None


def edge_onnxruntime() -> str:
    return f"onnxruntime=={metadata.version('onnxruntime')}"  # the same engine as the edge's


def mlserver_requirements() -> list[str]:
    # httptools as uvicorn[standard] gives the edge: the same HTTP parser.
    return [f"mlserver=={MLSERVER_VERSION}", "uvloop<0.22", "httptools", edge_onnxruntime(), "numpy"]


def pytriton_requirements() -> list[str]:
    return [f"nvidia-pytriton=={PYTRITON_VERSION}", edge_onnxruntime(), "numpy"]


def write_model_folder(folder: Path, bundle_dir: Path, offers: list[dict[str, Any]], runtime: str) -> None:
    """The bundle's ONNX graph and manifest, the offers by region, the shared scorer and the peer's runtime."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(bundle_dir / "model.onnx", folder / "model.onnx")
    shutil.copy(bundle_dir / "manifest.json", folder / "manifest.json")
    for name in ("scoring.py", runtime):
        shutil.copy(RUNTIME_DIR / name, folder / name)
    catalog: dict[str, list[dict[str, Any]]] = {}
    for offer in offers:
        for region in offer["regions"]:
            catalog.setdefault(region, []).append(
                {k: offer[k] for k in ("id", "sku", "title", "price", "currency", "stock")}
            )
    (folder / "catalog.json").write_text(json.dumps(catalog))


def mlserver_instance(python: Path, workdir: Path, index: int, s: InstanceSettings) -> tuple[Service, str]:
    """One MLServer instance on free ports; access logs off (debug false), as a production user runs it."""
    # `mlserver start DIR` takes DIR as its model repository and reads DIR/settings.json.
    instance = workdir / f"instance-{index}"
    write_model_folder(instance / PEER_MODEL, s.bundle_dir, s.offers, "mlserver_runtime.py")
    (instance / PEER_MODEL / "model-settings.json").write_text(
        json.dumps(
            {
                "name": PEER_MODEL,
                "implementation": "mlserver_runtime.RecommenderRuntime",
                "parameters": {"uri": "./model.onnx", "version": "bench"},
            },
            indent=2,
        )
    )
    port = free_port()
    settings = {
        "debug": False,
        "host": "127.0.0.1",
        # Off like the edge and the ceiling: locust asks for gzip, and MLServer's default would compress
        # every answer over 500 bytes, costing it half its throughput for a loopback ~1 KB body.
        "gzip_enabled": False,
        "http_port": port,
        "grpc_port": free_port(),
        "metrics_port": free_port(),
        "parallel_workers": s.mlserver_parallel_workers,
        "load_models_at_startup": True,
        "metrics_dir": str(instance / ".metrics"),
    }
    (instance / "settings.json").write_text(json.dumps(settings, indent=2))
    proc = Service(
        name=f"mlserver {index}",
        argv=[str(python.parent / "mlserver"), "start", str(instance)],
        port=port,
        log_path=workdir / f"mlserver-{index}.log",
        cwd=instance,
        env={"PYTHONDONTWRITEBYTECODE": "1"},
    )
    return proc, f"http://127.0.0.1:{port}"


def pytriton_instance(python: Path, workdir: Path, index: int, s: InstanceSettings) -> tuple[Service, str]:
    """One PyTriton process (it starts Triton's server and its Python backend as children) on free ports."""
    folder = workdir / f"instance-{index}"
    write_model_folder(folder, s.bundle_dir, s.offers, "pytriton_runtime.py")
    port = free_port()
    ports = ["--http-port", str(port), "--grpc-port", str(free_port()), "--metrics-port", str(free_port())]
    # Triton's binaries link against libpython: with a pyenv (not a system) Python it is under the prefix's lib.
    libs = [str(Path(sys.base_prefix) / "lib"), *filter(None, [os.environ.get("LD_LIBRARY_PATH")])]
    proc = Service(
        name=f"pytriton {index}",
        argv=[str(python), "pytriton_runtime.py", str(folder), *ports],
        port=port,
        log_path=workdir / f"pytriton-{index}.log",
        cwd=folder,
        env={"PYTHONDONTWRITEBYTECODE": "1", "LD_LIBRARY_PATH": ":".join(libs)},
        own_group=True,  # tritonserver and the backend stubs are its children: a kill takes them all
    )
    return proc, f"http://127.0.0.1:{port}"


def stop_instance(proc: Service) -> None:
    """SIGTERM (PyTriton's runtime then stops Triton's server and stubs), then, for a process group of its own,
    SIGKILL for anything left in it."""
    proc.stop(timeout_s=30)
    if proc.own_group and proc.process is not None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.process.pid, signal.SIGKILL)


PEERS = {
    "peer_mlserver": Peer(
        target="peer_mlserver",
        label=f"MLServer {MLSERVER_VERSION}",
        ready_paths=(f"/v2/models/{PEER_MODEL}/ready",),
        requirements=mlserver_requirements,
        instance=mlserver_instance,
        version_probe="import mlserver, uvloop; print(f'MLServer {mlserver.__version__}, uvloop {uvloop.__version__}')",
    ),
    "peer_pytriton": Peer(
        target="peer_pytriton",
        label=f"PyTriton {PYTRITON_VERSION}",
        # The server is ready before PyTriton has loaded the model into it: wait for both.
        ready_paths=("/v2/health/ready", f"/v2/models/{PEER_MODEL}/ready"),
        requirements=pytriton_requirements,
        instance=pytriton_instance,
        version_probe="from importlib.metadata import version; print('PyTriton', version('nvidia-pytriton'))",
    ),
}
