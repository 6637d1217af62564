"""Assembly of the edge node: Starlette routes, the syncer in the background, and the state swap it drives."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import AsyncIterator

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.routing import Route

from models.runtime import BundleError, Ranker
from origin_sync.client import Replica, Syncer

from . import api
from .config import EdgeConfig
from .metrics import EdgeMetrics
from .state import EdgeState, StateHolder

log = logging.getLogger("edgerec.edge")


class StateUpdater:
    """Turns each new replica from the syncer into a served EdgeState, loading a new model only when it changed."""

    def __init__(self, holder: StateHolder, metrics: EdgeMetrics) -> None:
        self.holder = holder
        self.metrics = metrics
        self.ranker: Ranker | None = None
        self._refused_sha: str | None = None

    async def _model_for(self, replica: Replica, syncer: Syncer) -> Ranker | None:
        ref = replica.model
        if ref is None or (self.ranker is not None and self.ranker.sha256 == ref["sha256"]):
            return self.ranker
        if ref["sha256"] == self._refused_sha:
            return self.ranker
        try:
            blob = await syncer.fetch_blob(ref["sha256"])
            ranker = await asyncio.to_thread(Ranker.from_bytes, blob, ref["manifest"])
        except BundleError as exc:
            # A bad bundle never goes live: keep serving the model we have.
            self._refused_sha = ref["sha256"]
            self.metrics.model_load_failures.inc()
            log.error("model %s refused, keeping %s: %s", ref.get("version"),
                      self.ranker.version if self.ranker else None, exc)
            return self.ranker
        log.info("model %s loaded and golden-checked", ranker.version)
        if self.ranker is not None:
            self.metrics.model_info.remove(self.ranker.version)
        self.metrics.model_info.labels(ranker.version).set(1)
        self.ranker = ranker
        return ranker

    async def __call__(self, replica: Replica, syncer: Syncer) -> None:
        ranker = await self._model_for(replica, syncer)
        if ranker is None:
            log.warning("data version %d has no usable model yet; not ready", replica.version)
            return
        state = await asyncio.to_thread(EdgeState.build, replica, ranker)
        self.holder.current = state  # the swap: one reference, readers see the old or the new state whole
        log.info("serving data version %d (%s)", state.data_version,
                 ", ".join(f"{r}: {len(c)} offers" for r, c in state.catalogs.items()))


def build_app(config: EdgeConfig) -> Starlette:
    holder = StateHolder()
    metrics = EdgeMetrics()
    syncer = Syncer(origin_url=config.origin_url, regions=config.regions, token=config.sync_token,
                    on_replica=StateUpdater(holder, metrics), wait_s=config.sync_wait_s)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        task = asyncio.create_task(syncer.run(), name="edgerec-sync")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    app = Starlette(
        routes=[
            Route("/v1/recommendations", api.recommendations, methods=["POST"]),
            Route("/healthz", api.healthz, methods=["GET"]),
            Route("/readyz", api.readyz, methods=["GET"]),
            Route("/metrics", api.metrics_endpoint, methods=["GET"]),
            Route("/openapi.json", api.openapi, methods=["GET"]),
        ],
        exception_handlers={HTTPException: api.http_exception, Exception: api.unhandled_exception},
        lifespan=lifespan,
    )
    app.state.config = config
    app.state.holder = holder
    app.state.metrics = metrics
    app.state.syncer = syncer
    return app


def serve(config: EdgeConfig) -> None:
    import uvicorn

    uvicorn.run(build_app(config), host=config.host, port=config.port, loop="uvloop", http="httptools",
                log_level="warning", access_log=False, server_header=False,
                limit_concurrency=2048, timeout_keep_alive=30, h11_max_incomplete_event_size=16 * 1024)
