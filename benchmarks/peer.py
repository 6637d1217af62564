"""The peer: MLServer serving the same ONNX ranker, candidates and top-k, from a venv of its own.

MLServer's pins (FastAPI, pydantic, uvloop < 0.22 for its issue #2286) must not mix with edgerec's,
so the harness makes a venv for it once, in a cache directory, and reuses it on later runs.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from edgerec.cli.process import Service, free_port

from .traffic import PEER_MODEL

RUNTIME_FILE = Path(__file__).resolve().parent / "peer_runtime" / "mlserver_runtime.py"
MLSERVER_VERSION = "1.7.1"


def requirements() -> list[str]:
    # The same onnxruntime as the edge, and httptools as uvicorn[standard] gives the edge: the same engine.
    return [
        f"mlserver=={MLSERVER_VERSION}",
        "uvloop<0.22",
        "httptools",
        f"onnxruntime=={metadata.version('onnxruntime')}",
        "numpy",
    ]


def default_venv_dir() -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    tag = hashlib.sha256(" ".join(requirements()).encode()).hexdigest()[:10]
    return cache / "edgerec-bench" / f"peer-mlserver-{tag}"


def ensure_venv(venv: Path, log_path: Path) -> Path:
    """The peer's venv, created on first use (pip, a minute or so) and reused while its requirements hold."""
    marker = venv / ".edgerec-requirements"
    wanted = "\n".join(requirements())
    mlserver = venv / "bin" / "mlserver"
    if mlserver.exists() and marker.exists() and marker.read_text() == wanted:
        return mlserver
    print(
        f"  creating the peer's venv at {venv} (once; reused by later runs): pip install {' '.join(requirements())}",
        flush=True,
    )
    if venv.exists():
        shutil.rmtree(venv)
    venv.parent.mkdir(parents=True, exist_ok=True)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, stdout=log, stderr=subprocess.STDOUT)
        result = subprocess.run(
            [
                str(venv / "bin" / "python"),
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                *requirements(),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    if result.returncode != 0:
        raise RuntimeError(f"pip install for the peer failed (exit {result.returncode}); see {log_path}")
    marker.write_text(wanted)
    return mlserver


def write_model_repository(root: Path, bundle_dir: Path, offers: list[dict[str, Any]]) -> None:
    """A model repository with one model: the bundle's ONNX graph, its manifest, the offers and the runtime."""
    model_dir = root / PEER_MODEL
    model_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(bundle_dir / "model.onnx", model_dir / "model.onnx")
    shutil.copy(bundle_dir / "manifest.json", model_dir / "manifest.json")
    shutil.copy(RUNTIME_FILE, model_dir / "mlserver_runtime.py")
    catalog: dict[str, list[dict[str, Any]]] = {}
    for offer in offers:
        for region in offer["regions"]:
            catalog.setdefault(region, []).append(
                {k: offer[k] for k in ("id", "sku", "title", "price", "currency", "stock")}
            )
    (model_dir / "catalog.json").write_text(json.dumps(catalog))
    (model_dir / "model-settings.json").write_text(
        json.dumps(
            {
                "name": PEER_MODEL,
                "implementation": "mlserver_runtime.RecommenderRuntime",
                "parameters": {"uri": "./model.onnx", "version": "bench"},
            },
            indent=2,
        )
    )


def mlserver_process(
    mlserver: Path, workdir: Path, bundle_dir: Path, offers: list[dict[str, Any]], index: int, parallel_workers: int
) -> tuple[Service, str]:
    """One MLServer instance on free ports; access logs off (debug false), as a production user runs it."""
    # `mlserver start DIR` takes DIR as its model repository and reads DIR/settings.json.
    instance = workdir / f"instance-{index}"
    write_model_repository(instance, bundle_dir, offers)
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
        "parallel_workers": parallel_workers,
        "load_models_at_startup": True,
        "metrics_dir": str(instance / ".metrics"),
    }
    (instance / "settings.json").write_text(json.dumps(settings, indent=2))
    proc = Service(
        name=f"mlserver {index}",
        argv=[str(mlserver), "start", str(instance)],
        port=port,
        log_path=workdir / f"mlserver-{index}.log",
        cwd=instance,
        env={"PYTHONDONTWRITEBYTECODE": "1"},
    )
    return proc, f"http://127.0.0.1:{port}"


def mlserver_version(mlserver: Path) -> str | None:
    python = mlserver.parent / "python"
    try:
        out = subprocess.run(
            [str(python), "-c", "import mlserver, uvloop; print(mlserver.__version__, uvloop.__version__)"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None
