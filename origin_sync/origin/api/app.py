"""The origin's HTTP service assembled: the aiohttp app (middlewares, routes, startup and shutdown) and `serve`,
which runs it until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import ssl
from typing import Any

from aiohttp import web

from edgerec.core.ratelimit import make_limiter
from edgerec.core.shutdown import EXIT_MARGIN_S, Drain
from edgerec.core.tls import CertificateReloader
from edgerec.core.tracing import configure
from origin_sync.origin.config import OriginConfig
from origin_sync.origin.keyring import KeyRing
from origin_sync.origin.sinks import EventSink, open_sink
from origin_sync.origin.store import ChangeLogStore, open_store

from . import (
    admin_experiments,
    admin_keys,
    admin_loop,
    admin_models,
    admin_offers,
    admin_ops,
    admin_profiles,
    events,
    openapi,
    probes,
    sync,
)
from .access import request_ids, runner_options
from .auth import auth_middleware
from .bodies import MAX_UPLOAD_BYTES
from .errors import JsonErrorRunner, errors_middleware
from .metrics import OriginMetrics
from .reload import CredentialReloader
from .state import (
    CHANGES,
    CONFIG,
    CREDENTIALS,
    DRAIN,
    KEYRING,
    LIMITS,
    METRICS,
    READY_STATE,
    SINK,
    SNAPSHOTS,
    STORE,
    TRACING,
    ChangeSignal,
    SnapshotCache,
)
from .traces import WriteTraces, tracing_middleware

log = logging.getLogger("edgerec.origin")


def build_app(
    config: OriginConfig, store: ChangeLogStore | None = None, sink: EventSink | None = None
) -> web.Application:
    if config.signer is None:
        raise ValueError("the origin needs a signing key")
    # Off (EDGEREC_TRACE_SAMPLE=0, the default): no tracing middleware at all, and the SDK is not imported.
    tracing = configure("edgerec-origin", config.trace_sample, config.trace_exporter)
    traced = [tracing_middleware(tracing, WriteTraces())] if tracing.enabled else []
    # Errors outermost, so that what auth refuses and what a handler raises leave in the one format.
    middlewares = [errors_middleware, auth_middleware, *traced]
    if config.access_log_rate > 0:
        middlewares.insert(0, request_ids)
    app = web.Application(middlewares=middlewares, client_max_size=MAX_UPLOAD_BYTES)
    app[CONFIG] = config
    app[TRACING] = tracing
    app[STORE] = store or open_store(config.dsn, config.db_path, config.blob_dir)
    app[SNAPSHOTS] = SnapshotCache()
    app[METRICS] = OriginMetrics()
    app[KEYRING] = KeyRing(config.signers or (config.signer,))
    app[CREDENTIALS] = CredentialReloader(config.credentials, app[METRICS])
    app[LIMITS] = {
        "admin": make_limiter(config.admin_rate_limit_rps, config.admin_rate_limit_burst),
        "sync": make_limiter(config.sync_rate_limit_rps, config.sync_rate_limit_burst),
    }
    app[SINK] = sink or open_sink(config.event_sinks, config.dsn, config.events_db, config.nats_url)
    app[READY_STATE] = {"reason": None}
    app[DRAIN] = Drain(config.drain_s, config.shutdown_timeout_s)

    async def lifecycle(app: web.Application) -> Any:
        app[CHANGES] = ChangeSignal()
        app[STORE].on_change(app[CHANGES].notify)
        await app[STORE].open()
        await app[SINK].open()
        app[KEYRING].adopt(await app[STORE].key_set())
        tasks = [
            asyncio.create_task(admin_ops.compact_periodically(app), name="edgerec-compact"),
            asyncio.create_task(admin_keys.follow_key_set(app), name="edgerec-key-set"),
        ]
        yield
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await app[SINK].close()
        await app[STORE].close()
        app[TRACING].shutdown()  # the spans still batched are exported

    async def on_shutdown(app: web.Application) -> None:
        app[CHANGES].close()

    app.cleanup_ctx.append(lifecycle)
    app.cleanup_ctx.append(app[CREDENTIALS].watching)
    app.on_shutdown.append(on_shutdown)
    add_routes(app.router)
    openapi.publish(app)
    return app


def add_routes(router: web.UrlDispatcher) -> None:
    """Every route of the origin (what /openapi.json documents, each from its handler's @documented)."""
    for module in (
        probes,
        openapi,
        admin_ops,
        admin_keys,
        admin_offers,
        admin_experiments,
        admin_models,
        admin_loop,
        admin_profiles,
        events,
        sync,
    ):
        module.add_routes(router)


def _listener_tls(app: web.Application, config: OriginConfig) -> ssl.SSLContext | None:
    if config.tls is None:
        return None
    # The listener keeps this context; a renewed certificate goes into a new one that its SNI callback hands out.
    context = config.tls.context()
    reloader = CertificateReloader(
        context, config.tls.cert_file, config.tls.key_file, config.tls.reload_interval_s, factory=config.tls.context
    )
    app.cleanup_ctx.append(reloader.running)
    return context


async def _run(app: web.Application, config: OriginConfig, ssl_context: ssl.SSLContext | None) -> None:
    # SIGTERM starts the drain (/readyz 503 draining, requests still served); once its window is over this returns,
    # and the runner's cleanup stops listening, answers open long-polls and waits for the requests in flight for
    # what the shutdown timeout leaves. SIGINT raises GracefulExit out of the loop at once; `serve` then cancels
    # this task, which cleans up the same way.
    drain = app[DRAIN]
    in_flight_s = max(0.5, config.shutdown_timeout_s - config.drain_s - EXIT_MARGIN_S)
    runner = JsonErrorRunner(
        app, handle_signals=True, shutdown_timeout=in_flight_s, **runner_options(config.access_log_rate)
    )
    await runner.setup()
    with contextlib.suppress(NotImplementedError, RuntimeError):  # a loop without signal handlers: no drain
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, drain.begin)
    try:
        await web.TCPSite(runner, config.host, config.port, ssl_context=ssl_context).start()
        await drain.window()
    finally:
        await runner.cleanup()


def serve(config: OriginConfig) -> None:
    """Run the origin until SIGINT/SIGTERM (exit 0 after a clean stop), on uvloop."""
    import uvloop

    app = build_app(config)
    ssl_context = _listener_tls(app, config)
    log.info(
        "origin listening on %s://%s:%d (%s, signing key %s%s)",
        "https" if ssl_context else "http",
        config.host,
        config.port,
        "postgresql" if config.dsn else f"sqlite {config.db_path}",
        config.signer.key_id if config.signer else None,
        ", client certificates required" if config.tls and config.tls.require_client_cert else "",
    )
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    main = loop.create_task(_run(app, config, ssl_context))
    try:
        loop.run_until_complete(main)
    except (web.GracefulExit, KeyboardInterrupt):
        pass
    finally:
        main.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            loop.run_until_complete(main)
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
