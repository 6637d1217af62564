"""One service as a real child process on loopback (start, probe, stop) and the plain HTTP calls that drive it."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_call(
    url_base: str,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 10.0,
    ssl_context: ssl.SSLContext | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """One HTTP(S) request with the standard library; returns (status, headers, body). An https:// base is
    verified with `ssl_context` (the system's trust store without one)."""
    scheme, _, rest = url_base.partition("://")
    host_port = rest.rstrip("/")
    conn: http.client.HTTPConnection
    if scheme == "https":
        conn = http.client.HTTPSConnection(
            host_port, timeout=timeout, context=ssl_context or ssl.create_default_context()
        )
    else:
        conn = http.client.HTTPConnection(host_port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def http_json(
    url_base: str,
    method: str,
    path: str,
    payload: Any = None,
    headers: dict[str, str] | None = None,
    timeout: float = 10.0,
    ssl_context: ssl.SSLContext | None = None,
) -> tuple[int, Any]:
    body = None if payload is None else json.dumps(payload).encode()
    hdrs = {"Content-Type": "application/json", **(headers or {})}
    status, _, raw = http_call(url_base, method, path, body, hdrs, timeout, ssl_context)
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, raw.decode(errors="replace")


@dataclass
class Service:
    """One server process with its log file, started without a shell (its pid is the server's) and stopped by pid with
    SIGTERM: `python -m edgerec <args>`, or any other program given as `argv` (the benchmarks' ceiling, MLServer and
    Varnish). With `own_group` it leads a process group of its own, and `kill()` SIGKILLs the whole group: the worker
    processes of an edge with `--workers` die with it, as in a crash of the host's unit (killing the parent alone
    leaves the workers serving on the inherited socket)."""

    name: str
    port: int
    log_path: Path
    args: list[str] = field(default_factory=list)
    argv: list[str] | None = None  # another program's whole command line, instead of edgerec's
    cwd: Path | None = None
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen | None = None
    scheme: str = "http"
    tls: ssl.SSLContext | None = None  # how probes verify an https service (and the certificate they present)
    own_group: bool = False  # a process group of its own, killed as a whole

    def command(self) -> list[str]:
        return self.argv if self.argv is not None else [sys.executable, "-m", "edgerec", *self.args]

    @property
    def pid(self) -> int:
        assert self.process is not None, f"{self.name} was not started"
        return self.process.pid

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def start(self) -> "Service":
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        env = {**os.environ, **self.env}
        self.process = subprocess.Popen(
            self.command(),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=self.cwd,
            process_group=0 if self.own_group else None,
        )
        log.close()
        return self

    def wait_ready(self, path: str, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        last = "no answer"
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}; log: {self.log_tail()}")
            try:
                status, _, body = http_call(self.url, "GET", path, timeout=2, ssl_context=self.tls)
                if status == 200:
                    return
                last = f"HTTP {status} {body[:200]!r}"
            except OSError as exc:
                last = str(exc)
            time.sleep(0.05)
        raise TimeoutError(f"{self.name} not ready at {path} after {timeout_s}s ({last}); log: {self.log_tail()}")

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, timeout_s: float = 10.0) -> None:
        self.terminate()
        self.wait_stopped(timeout_s)

    def terminate(self) -> None:
        """SIGTERM (a clean stop), without waiting for it: several services stop side by side."""
        proc = self.process
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)

    def wait_stopped(self, timeout_s: float = 10.0) -> None:
        """Until the process has exited; SIGKILL (kill()) once `timeout_s` has passed."""
        proc = self.process
        if proc is None or proc.poll() is not None:
            return
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """SIGKILL: the process, or with `own_group` every process of its group."""
        proc = self.process
        if proc is None or proc.returncode is not None:  # reaped before: its pid may be another process's by now
            return
        if self.own_group:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # not reaped yet, so the group is still this service's
        else:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        proc.wait()
