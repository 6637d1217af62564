"""Assembly of the edge node: Starlette routes, the syncer in the background, and the state swap it drives."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path
from typing import AsyncIterator

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.routing import Route

from edgerec.core.heap import trim_heap
from edgerec.core.ratelimit import make_limiter
from edgerec.core.shutdown import Drain, stop_after_window, take_sigterm
from edgerec.core.tls import CertificateReloader
from edgerec.core.tracing import DISABLED, Tracing, configure
from models.runtime import BundleError, Ranker
from origin_sync.replica import Replica, Syncer
from origin_sync.wire.protocol import MAX_WRITE_TRACES
from origin_sync.wire.signing import Verifier

from . import api
from .config import EdgeConfig, config_from_env
from .events import EventRecorder, post_events
from .hot_path import AccessLoggedHotPath, HotPath
from .limits import LIFESPAN_KEY, ConnectionLimits
from .metrics import EdgeMetrics
from .profile_sync import ProfileSync
from .profiles import register_profile_metrics
from .recommendations import RecommendationsEndpoint
from .shoppers import ShopperProfiles
from .spool import EventSpool, run_shipper, ship_remaining
from .state import EdgeState, StateHolder

log = logging.getLogger("edgerec.edge")

STARTUP_WAIT_S = 15.0


class StateUpdater:
    """Turns each new replica from the syncer into a served EdgeState, loading a new model only when it changed.

    A model blob that cannot be fetched or fails its hash or signature raises: the syncer then keeps the whole
    previous version (offers and model) and retries. A bundle that arrives intact but fails its own checks
    (golden outputs) is refused for good: the data moves on with the model the edge already serves.
    """

    def __init__(self, holder: StateHolder, metrics: EdgeMetrics, tracing: Tracing = DISABLED) -> None:
        self.holder = holder
        self.metrics = metrics
        self.tracing = tracing
        self.ranker: Ranker | None = None
        self._refused_sha: str | None = None
        self.first_state = asyncio.Event()
        self.variant_rankers: dict[str, Ranker] = {}  # experiment variants' models, by sha256
        self._refused_variants: set[str] = set()

    async def _variant_models(self, replica: Replica, syncer: Syncer) -> dict[str, Ranker]:
        """Load (beside the served model) every model a running experiment's variant needs, each warmed up and
        golden-checked; a refused one is left out and its experiment is not served here."""
        from .experiments import variant_model_refs

        loaded: dict[str, Ranker] = {}
        for ref in variant_model_refs(replica):
            sha = ref["sha256"]
            if sha in loaded or sha in self._refused_variants:
                continue
            if self.ranker is not None and self.ranker.sha256 == sha:
                loaded[sha] = self.ranker
            elif sha in self.variant_rankers:
                loaded[sha] = self.variant_rankers[sha]
            else:
                blob = await syncer.fetch_blob(sha)  # verified like the served model's
                try:
                    loaded[sha] = await asyncio.to_thread(Ranker.from_bytes, blob, ref["manifest"])
                except BundleError as exc:
                    self._refused_variants.add(sha)
                    self.metrics.model_load_failures.inc()
                    log.error("experiment model %s refused: %s", ref.get("version"), exc)
                    continue
                log.info("experiment model %s loaded and golden-checked", ref.get("version"))
        return loaded

    async def _model_for(self, replica: Replica, syncer: Syncer) -> Ranker | None:
        ref = replica.model
        if ref is None or (self.ranker is not None and self.ranker.sha256 == ref["sha256"]):
            return self.ranker
        if ref["sha256"] == self._refused_sha:
            return self.ranker
        blob = await syncer.fetch_blob(ref["sha256"])  # verified: signature over the sha256, bytes against it
        try:
            ranker = await asyncio.to_thread(Ranker.from_bytes, blob, ref["manifest"])
        except BundleError as exc:
            self._refused_sha = ref["sha256"]
            self.metrics.model_load_failures.inc()
            log.error(
                "model %s refused, keeping %s: %s",
                ref.get("version"),
                self.ranker.version if self.ranker else None,
                exc,
            )
            return self.ranker
        log.info("model %s loaded and golden-checked", ranker.version)
        if self.ranker is not None:
            self.metrics.model_replaced(self.ranker.version)
        self.metrics.model_info.labels(ranker.version).set(1)
        self.ranker = ranker
        return ranker

    async def __call__(self, replica: Replica, syncer: Syncer) -> None:
        write_traces, syncer.write_traces = syncer.write_traces, ""
        started_ns = time.time_ns() if write_traces and self.tracing.enabled else 0
        ranker = await self._model_for(replica, syncer)
        if ranker is None:
            log.warning("data version %d has no usable model yet; not ready", replica.version)
            return
        rankers = await self._variant_models(replica, syncer)
        previous = self.holder.current
        state = await asyncio.to_thread(EdgeState.build, replica, ranker, rankers, previous)
        self.variant_rankers = rankers  # models no experiment needs any more are let go
        self.holder.current = state  # the swap: one reference, readers see the old or the new state whole
        self.first_state.set()
        if previous is None or state.catalogs is not previous.catalogs:
            # A new layout of the offers: the decoded offers it was built from, and the previous layout, are freed
            # now; the C heap keeps their pages unless told (14 MiB at 100,000 offers).
            del previous
            await asyncio.to_thread(trim_heap)
        if started_ns:  # in the trace of each sampled admin write this version carries: its being served here
            attributes = {"edgerec.data_version": state.data_version, "edgerec.regions": ",".join(replica.regions)}
            self.tracing.in_each(write_traces, "edge.sync.apply", attributes, started_ns, MAX_WRITE_TRACES)
        log.info(
            "serving data version %d (%s)",
            state.data_version,
            ", ".join(f"{r}: {len(c)} offers" for r, c in state.catalogs.items()),
        )


def build_app(config: EdgeConfig) -> HotPath:
    holder = StateHolder()
    metrics = EdgeMetrics()
    origin_tls = config.origin_ssl_context()  # the syncer's and the shipper's: CA bundle, client certificate
    # Off (EDGEREC_TRACE_SAMPLE=0, the default): DISABLED, and the SDK is not even imported.
    tracing = configure(
        "edgerec-edge", config.trace_sample, config.trace_exporter, {"edgerec.regions": ",".join(config.regions)}
    )
    updater = StateUpdater(holder, metrics, tracing)
    syncer = Syncer(
        origin_url=config.origin_url,
        regions=config.regions,
        token=config.sync_token,
        on_replica=updater,
        verifier=Verifier.from_config(config.origin_public_key),
        data_dir=config.data_dir,
        wait_s=config.sync_wait_s,
        backoff_max_s=config.sync_backoff_max_s,
        ssl_context=origin_tls,
        tracing=tracing,
    )
    # A renewed client certificate on disk is loaded into the same context: the next connection presents it.
    client_cert_reloader = (
        CertificateReloader(
            origin_tls, Path(config.client_cert_file), Path(config.client_key_file), config.tls_reload_interval_s
        )
        if origin_tls is not None and config.client_cert_file
        else None
    )
    # With events off (EDGEREC_EVENTS=off) there is no spool, no recorder and no shipper at all.
    spool = (
        EventSpool(config.data_dir / "events", max_bytes=config.event_spool_max_mb * 1024 * 1024, ack=config.events_ack)
        if config.events
        else None
    )
    recorder = EventRecorder(spool, config.pseudonym_key or None) if spool is not None else None
    metrics.spool = spool
    # The shoppers' profiles: opened at start (below), closed at shutdown; app.state.profiles.store is the store.
    profiles = ShopperProfiles(config)
    # SIGTERM: /readyz 503 draining for the drain window, then uvicorn stops (docs/operations.md, "Graceful stop").
    drain = Drain(config.drain_s, config.shutdown_timeout_s)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, ConnectionLimits]]:
        # The syncer first serves the copy persisted on disk (no network), then follows the origin.
        background_tasks = []
        server_handler, give_back = take_sigterm(drain)  # uvicorn's handler gets the stop after the window
        handing_over = asyncio.create_task(stop_after_window(drain, server_handler, give_back), name="edgerec-drain")
        await profiles.open()
        if profiles.store is not None:
            register_profile_metrics(metrics.registry, profiles.store)
            # The origin's summaries and erasures, as the syncer verifies them, go into the same store.
            syncer.on_profiles = ProfileSync(profiles.store, profiles.store.codec)
            if profiles.store.stats.started_empty:
                syncer.reload_profiles()  # no-op for a new edge, which takes a snapshot anyway
        if spool is not None:
            await asyncio.to_thread(spool.open)
            if not config.pseudonym_key:
                log.warning("EDGEREC_PSEUDONYM_KEY is not set: events carry no shopper reference at all")
            background_tasks.append(asyncio.create_task(spool.run_writer(), name="edgerec-spool-writer"))
            background_tasks.append(
                asyncio.create_task(
                    run_shipper(
                        spool,
                        lambda: syncer.current_origin,
                        config.sync_token,
                        config.regions,
                        backoff_max_s=config.sync_backoff_max_s * 3,
                        ssl_context=origin_tls,
                        tracing=tracing,
                    ),
                    name="edgerec-spool-shipper",
                )
            )
        else:
            log.info("events are off (EDGEREC_EVENTS=off): no impressions recorded, POST /v1/events answers 404")
        task = asyncio.create_task(syncer.run(), name="edgerec-sync")
        background_tasks.append(task)
        if metrics.multiprocess_dir:
            background_tasks.append(asyncio.create_task(_publish_metrics(metrics, syncer), name="edgerec-metrics"))
        reloading = (
            asyncio.create_task(client_cert_reloader.run(), name="edgerec-tls-reload")
            if client_cert_reloader is not None
            else None
        )
        if config.workers > 1:
            # Workers share one listening socket and a worker takes connections once this returns: wait for a
            # state first, so that a shopper is never handed to a worker that cannot answer yet.
            try:
                await asyncio.wait_for(updater.first_state.wait(), STARTUP_WAIT_S)
            except asyncio.TimeoutError:
                log.warning("no state after %.0f s; accepting requests anyway (not ready)", STARTUP_WAIT_S)
        try:
            # uvicorn hands the lifespan state to its connection protocol (edge_node.limits reads its bounds there).
            yield {
                LIFESPAN_KEY: ConnectionLimits(
                    config.max_header_bytes,
                    config.header_timeout_s,
                    lambda reason: metrics.connections_cut.labels(reason).inc(),
                    max_body_bytes=config.max_body_bytes,
                )
            }
        finally:
            if reloading is not None:
                reloading.cancel()
            # Here uvicorn has stopped accepting and the answers in flight are given (or its wait ran out).
            handing_over.cancel()
            for background in reversed(background_tasks):  # the writer last: it writes what is still pending
                background.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await background
            if spool is not None:  # what the writer just closed goes to the origin, within the stop's budget
                await ship_remaining(
                    spool, syncer.current_origin, config.sync_token, config.regions, drain.seconds_left(), origin_tls
                )
            await profiles.close()  # the embedded store checkpoints its WAL into the file
            tracing.shutdown()  # the spans still batched are exported
            give_back()

    # One bucket per client for the whole public API (recommendations and events), in this worker.
    limiter = make_limiter(config.rate_limit_rps, config.rate_limit_burst)
    recommendations = RecommendationsEndpoint(
        holder,
        metrics,
        config.cdn,
        config.rules,
        config.max_body_bytes,
        config.max_k,
        config.default_k,
        recorder=recorder,
        limiter=limiter,
        profiles=profiles,
        tracing=tracing,
    )
    app = Starlette(
        routes=[
            # A raw ASGI app (not a function): Starlette hands it every method, and it answers 405 itself.
            Route("/v1/recommendations", recommendations),
            Route("/v1/events", post_events, methods=["POST"]),
            Route("/healthz", api.healthz, methods=["GET"]),
            Route("/readyz", api.readyz, methods=["GET"]),
            Route("/metrics", api.metrics_endpoint, methods=["GET"]),
            Route("/openapi.json", api.openapi, methods=["GET"]),
        ],
        exception_handlers={HTTPException: api.http_exception, Exception: api.unhandled_exception},
        lifespan=lifespan,
    )
    # A trailing slash is another path, answered 404 as JSON like every other error, not a 307 with an empty body.
    app.router.redirect_slashes = False
    app.state.config = config
    app.state.holder = holder
    app.state.drain = drain
    app.state.metrics = metrics
    app.state.syncer = syncer
    app.state.recorder = recorder
    app.state.limiter = limiter
    app.state.profiles = profiles  # the one profile store: .store.put_summary / .store.erase for the sync's hooks
    if config.access_log_rate > 0:
        return AccessLoggedHotPath(app, "/v1/recommendations", recommendations, config.access_log_rate)
    return HotPath(app, "/v1/recommendations", recommendations)


def app_from_environment() -> HotPath:
    """Factory for worker processes: rebuild the app from the config the parent put in the environment."""
    return build_app(config_from_env())


async def _publish_metrics(metrics: EdgeMetrics, syncer: Syncer, every_s: float = 1.0) -> None:
    """With several workers: this worker's sync and spool figures into the shared metric files, once a second."""
    while True:
        metrics.publish(syncer.status)
        await asyncio.sleep(every_s)
