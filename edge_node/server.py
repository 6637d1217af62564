"""The server the edge runs on: uvicorn (httptools, uvloop) with the bounds of limits.py, one process or several
workers on one socket, the shopper listener's TLS, and the stop's budget (docs/operations.md, "Graceful stop")."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import shutil
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn
from uvicorn.supervisors import Multiprocess

from edgerec.core.shutdown import EXIT_MARGIN_S
from edgerec.core.tls import CertificateReloader, server_context

from .app import build_app
from .config import EdgeConfig, config_to_env
from .limits import GuardedHttpToolsProtocol
from .metrics import MULTIPROC_ENV

log = logging.getLogger("edgerec.edge")


def graceful_shutdown_s(config: EdgeConfig) -> float:
    """uvicorn's wait for the requests in flight once it stops accepting: half of what the drain window leaves of
    the shutdown timeout, so that at least as much is left for the spool's last shipment (app.py's lifespan)."""
    return max(0.5, (config.shutdown_timeout_s - config.drain_s - EXIT_MARGIN_S) / 2)


@dataclass(frozen=True)
class ListenerTls:
    """uvicorn's `ssl_context_factory` for the shopper listener: a context from edgerec.core.tls, watched for renewals.

    uvicorn calls it in each worker process, in the worker's event loop, before it listens; beside the context it
    starts a CertificateReloader there, so a renewed pair on disk goes into a new context that the listener's SNI
    callback hands to every new connection, as on the origin (no restart). Plain data, so that uvicorn can hand it
    to worker processes."""

    cert_file: str
    key_file: str
    reload_interval_s: float

    def __call__(self, _config: Any, _default_factory: Any) -> ssl.SSLContext:
        cert_file, key_file = Path(self.cert_file), Path(self.key_file)
        factory = functools.partial(server_context, cert_file, key_file)
        context = factory()
        reloader = CertificateReloader(context, cert_file, key_file, self.reload_interval_s, factory=factory)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # not from a uvicorn server's loop: nothing can watch the files
            log.warning("the listener's certificate %s is read once; a renewal needs a restart", cert_file)
        else:
            # Referenced here until the worker's loop ends (and cancels it with the rest).
            _LISTENER_RELOADS.add(loop.create_task(reloader.run(), name="edgerec-listener-tls-reload"))
        return context


_LISTENER_RELOADS: set[asyncio.Task] = set()


def _multiprocess_metrics(data_dir: Path) -> None:
    """A fresh directory for prometheus-client's multiprocess files, named in the environment the workers inherit
    (it must be set before they import prometheus_client)."""
    directory = data_dir / "prometheus"
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    os.environ[MULTIPROC_ENV] = str(directory)


# uvicorn's settings the edge serves with, also benchmarks.ceiling's, so that the two differ only in the work per
# request.
UVICORN_OPTIONS: dict[str, Any] = dict(
    loop="uvloop",
    log_level="warning",
    access_log=False,
    server_header=False,
    date_header=False,
    limit_concurrency=4096,
    timeout_keep_alive=30,
)


def serve(config: EdgeConfig) -> None:
    from edgerec.core.logs import logging_config

    # httptools with the bounds of edge_node.limits (431 / 408 / 413 / 400); h11 is never used. uvicorn applies
    # log_config here and in each worker process: its own loggers, edgerec's and Python warnings, all as JSON lines.
    options = dict(
        host=config.host,
        port=config.port,
        http=GuardedHttpToolsProtocol,
        log_config=logging_config(),
        **UVICORN_OPTIONS,
        # After the drain window (the lifespan holds SIGTERM back until then): see graceful_shutdown_s.
        timeout_graceful_shutdown=graceful_shutdown_s(config),
        # uvicorn would otherwise take X-Forwarded-For from any connection of a "trusted" peer (127.0.0.1
        # by default) as the client address; the edge decides itself, only with the CDN's shared secret.
        proxy_headers=False,
    )
    if config.tls_cert_file:
        # For deployments where no CDN or load balancer terminates TLS in front of the edge.
        options.update(
            ssl_context_factory=ListenerTls(config.tls_cert_file, config.tls_key_file, config.tls_reload_interval_s)
        )
    if config.workers == 1:
        uvicorn.run(build_app(config), **options)
    else:
        # Each worker is a process with its own syncer and state: replicas share nothing but the origin (and the
        # metric files, so that /metrics shows every worker).
        _multiprocess_metrics(config.data_dir)
        config_to_env(config)
        # As uvicorn.run does for workers, with the supervisor below.
        workers = uvicorn.Config("edge_node.app:app_from_environment", factory=True, workers=config.workers, **options)
        with contextlib.suppress(KeyboardInterrupt):
            _Workers(workers, sockets=[workers.bind_socket()]).run()


class _Workers(Multiprocess):
    """uvicorn's supervisor of worker processes, letting go of its copy of the listening socket once it has passed a
    stop on to the workers: each closes its own after its drain window, and the port then refuses new connections,
    where the supervisor's copy would take them into a backlog that no process accepts from."""

    def terminate_all(self) -> None:
        super().terminate_all()
        for sock in self.sockets:
            sock.close()
