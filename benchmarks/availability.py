"""The availability drill: what shoppers see while parts fail under load, with real processes on this machine.

    python -m benchmarks.availability --out DIR [--rate 60] [--settle 3]

HAProxy with health checks (GET /readyz) in front of two replicas of each of two regions' edges; two origins on
one PostgreSQL cluster of the drill's own (initdb in a temporary directory) with a synchronous streaming standby,
the origins' DSN naming both servers (target_session_attrs=read-write); every edge lists both origins. Steady
traffic at a fixed rate per region (recommendations, and one request in five an event), while the drill, one fault
after the other: SIGKILLs an edge replica and restarts it; SIGKILLs an origin (and restarts it); restarts the other
origin; restarts PostgreSQL; crashes the PostgreSQL primary and promotes the standby; rolls every edge to a new
model and a new data version; restarts every edge, one at a time.
An admin writer adds an offer every quarter second through either origin meanwhile.

Reported: the availability shoppers saw (successful answers over all answers; fallbacks counted as served and
reported apart), the p99 during each fault and the time it took to heal, acknowledged admin writes lost, and
acknowledged events lost or duplicated at the origin. Writes report.json, report.md and timeline.png.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgerec.cli.process import Service, free_port, http_json
from edgerec.cli.services import edge_service, origin_service, publish_bundle, put_offer

from .drill_parts import LoadGenerator, PgCluster, haproxy_service, missing

REGIONS = ("GB", "DE")
# HAProxy marks a replica down after `fall 2` failed checks `inter 250ms` apart (drill_parts.FRONTEND): the drain
# window outlasts that with room for a loaded machine.
EDGE_DRAIN_S = 1.5
EDGE_SHUTDOWN_TIMEOUT_S = 10.0
ADMIN, SYNC, PSEUDONYM = (secrets.token_urlsafe(24) for _ in range(3))


def _progress(message: str, started: float) -> None:
    print(f"[{time.monotonic() - started:6.1f} s] {message}", file=sys.stderr, flush=True)


def _wait(predicate: Callable[[], bool], timeout_s: float, what: str) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        try:
            if predicate():
                return time.monotonic() - started
        except (OSError, ValueError, KeyError, RuntimeError):
            pass
        time.sleep(0.05)
    raise TimeoutError(f"{what}: not within {timeout_s} s")


class Drill:
    def __init__(self, out: Path, bundles: tuple[Path, Path], rate: float, settle_s: float) -> None:
        self.out, self.bundles, self.rate, self.settle_s = out, bundles, rate, settle_s
        self.workdir = out / "run"
        self.pg = PgCluster()
        self.origins = [
            origin_service(self.workdir, free_port(), ADMIN, SYNC, dsn=None, name=f"origin {i}") for i in (1, 2)
        ]
        self.edges: dict[str, list[Service]] = {}
        self.faults: list[dict[str, Any]] = []
        self.acked_writes: list[str] = []
        self.write_failures = 0
        self._writing = threading.Event()
        self.started = time.monotonic()

    # -- set-up ------------------------------------------------------------------------------------

    def start(self) -> None:
        self.pg.init()
        self.pg.start()
        self.pg.add_standby()
        for origin in self.origins:
            origin.env["EDGEREC_ORIGIN_DSN"] = self.pg.dsn
            origin.start()
        for origin in self.origins:
            origin.wait_ready("/healthz", timeout_s=60)
        publish_bundle(self.origins[0].url, ADMIN, self.bundles[0], state="active")
        self.skus = json.loads((self.bundles[0] / "manifest.json").read_text())["items"][:30]
        for region in REGIONS:
            for sku in self.skus:
                put_offer(self.origins[0].url, ADMIN, _offer(f"{region}-{sku}", sku, region))
        origin_urls = ",".join(o.url for o in self.origins)
        for region in REGIONS:
            self.edges[region] = [
                edge_service(
                    self.workdir,
                    region,
                    free_port(),
                    origin_urls,
                    SYNC,
                    ["--data-dir", str(self.workdir / f"edge-{region}-{i}")],
                    {
                        "EDGEREC_SYNC_BACKOFF_MAX_S": "1",
                        "EDGEREC_SYNC_WAIT_S": "5",
                        "EDGEREC_PSEUDONYM_KEY": PSEUDONYM,
                        # The graceful stop as deployed: HAProxy sees /readyz fail and stops sending before the
                        # edge stops accepting (the harness's edges stop at once otherwise).
                        "EDGEREC_DRAIN_S": str(EDGE_DRAIN_S),
                        "EDGEREC_SHUTDOWN_TIMEOUT_S": str(EDGE_SHUTDOWN_TIMEOUT_S),
                    },
                )
                for i in (1, 2)
            ]
            for i, edge in enumerate(self.edges[region], 1):
                edge.name = f"edge {region}-{i}"
                edge.start()
        for edge in self.all_edges():
            edge.wait_ready("/readyz", timeout_s=60)
        self.lb, self.urls = haproxy_service(self.workdir, self.edges)
        self.lb.start()
        _wait(
            lambda: all(
                http_json(u, "POST", "/v1/recommendations", {"region": r, "k": 5}, timeout=2)[0] == 200
                for r, u in self.urls.items()
            ),
            30,
            "the load balancer serving",
        )

    def all_edges(self) -> list[Service]:
        return [edge for edges in self.edges.values() for edge in edges]

    def stop(self) -> None:
        self._writing.set()
        for service in [getattr(self, "lb", None), *self.all_edges(), *self.origins]:
            if service is not None:
                service.stop()
        self.pg.stop()

    # -- what the drill watches --------------------------------------------------------------------

    def live_origins(self) -> list[Service]:
        return [o for o in self.origins if o.process is not None and o.process.poll() is None]

    def write_probe(self) -> int:
        """An offer written through any live origin (retried until one takes it): its data version."""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            for origin in self.live_origins():
                try:
                    return int(
                        put_offer(origin.url, ADMIN, _offer(f"GB-probe-{secrets.token_hex(4)}", self.skus[0], "GB"))[
                            "data_version"
                        ]
                    )
                except (OSError, RuntimeError, KeyError):
                    continue
            time.sleep(0.1)
        raise TimeoutError("no origin took a write within 60 s")

    def edges_at(self, version: int, model: str | None = None) -> bool:
        for edge in self.all_edges():
            status, body = http_json(edge.url, "GET", "/readyz", timeout=2)
            if status != 200 or (body.get("data_version") or 0) < version:
                return False
            if model is not None and body.get("model_version") != model:
                return False
        return True

    def _writer(self) -> None:
        n = 0
        while not self._writing.wait(0.25):
            n += 1
            offer_id = f"GB-w{n}"
            for origin in (self.origins[n % 2], self.origins[(n + 1) % 2]):
                try:
                    put_offer(origin.url, ADMIN, _offer(offer_id, self.skus[n % len(self.skus)], "GB"))
                    self.acked_writes.append(offer_id)
                    break
                except (OSError, RuntimeError):
                    continue
            else:
                self.write_failures += 1

    # -- the faults ----------------------------------------------------------------------------------

    def fault(self, name: str, inject: Callable[[], None], healed: Callable[[], None]) -> None:
        _progress(f"fault: {name}", self.started)
        t0 = self.load.now()
        inject()
        healed()
        t1 = self.load.now()
        self.faults.append({"name": name, "start_s": round(t0, 3), "end_s": round(t1, 3), "heal_s": round(t1 - t0, 3)})
        _progress(f"healed in {t1 - t0:.2f} s", self.started)
        time.sleep(self.settle_s)

    def run_faults(self) -> None:
        edge = self.edges["GB"][0]

        def restart_edge_replica() -> None:
            edge.kill()
            time.sleep(1.0)
            edge.start()

        self.fault(
            "edge replica SIGKILL + restart", restart_edge_replica, lambda: edge.wait_ready("/readyz", timeout_s=60)
        )
        first, second = self.origins
        self.fault("origin SIGKILL", first.kill, lambda: self._converge(self.write_probe()))
        first.start()
        first.wait_ready("/healthz", timeout_s=60)
        time.sleep(self.settle_s)

        def restart_second() -> None:
            second.stop()
            second.start()

        self.fault(
            "origin restart",
            restart_second,
            lambda: (second.wait_ready("/healthz", timeout_s=60), self._converge(self.write_probe())),
        )
        self.fault("PostgreSQL restart", self.pg.restart, lambda: self._converge(self.write_probe()))
        self.fault("PostgreSQL failover to its standby", self.pg.failover, lambda: self._converge(self.write_probe()))
        new_model: dict[str, str] = {}

        def roll() -> None:
            result = publish_bundle(self.origins[0].url, ADMIN, self.bundles[1], state="active")
            new_model["version"] = result.get("version") or result.get("model", {}).get("version")

        self.fault(
            "roll to a new model and data version",
            roll,
            lambda: self._converge(self.write_probe(), new_model.get("version")),
        )

        stops: list[dict[str, Any]] = []

        def rolling_restart() -> None:
            for replica in self.all_edges():
                # SIGTERM: the replica drains (HAProxy moves its traffic), then stops; how long and how it ended.
                sigterm = time.monotonic()
                replica.stop(timeout_s=EDGE_SHUTDOWN_TIMEOUT_S + 5)
                assert replica.process is not None
                stops.append(
                    {
                        "edge": replica.name,
                        "exit": replica.process.returncode,
                        "stop_s": round(time.monotonic() - sigterm, 2),
                    }
                )
                replica.start()
                replica.wait_ready("/readyz", timeout_s=60)
                time.sleep(0.5)  # the load balancer's health check marks it up again before the next goes down

        self.fault("rolling restart of every edge", rolling_restart, lambda: self._converge(self.write_probe()))
        self.faults[-1]["stops"] = stops

    def _converge(self, version: int, model: str | None = None) -> None:
        _wait(lambda: self.edges_at(version, model), 60, f"every edge at data version {version}")

    # -- the run -----------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        self.load = LoadGenerator(self.urls, self.rate, self.skus)
        self.load.start()
        writer = threading.Thread(target=self._writer, daemon=True)
        writer.start()
        time.sleep(self.settle_s)
        self.run_faults()
        self.load.stop()
        self._writing.set()
        writer.join(timeout=10)
        _progress("load stopped; waiting for the edges' spools to reach the origin", self.started)
        stored = self._stored_events()
        lost_writes = self._lost_writes()
        return self._report(stored, lost_writes)

    def _stored_events(self) -> Counter:
        acked = set(self.load.acked_events)
        last: Counter = Counter()
        stable_since = time.monotonic()
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            stored = Counter(asyncio.run(_drill_event_ids(self.pg.dsn)))
            if stored != last:
                last, stable_since = stored, time.monotonic()
            elif acked <= set(stored) and time.monotonic() - stable_since > 2:
                break
            time.sleep(0.5)
        return last

    def _lost_writes(self) -> int:
        origin = self.live_origins()[0]
        lost = 0
        for offer_id in self.acked_writes:
            status, _ = http_json(
                origin.url,
                "GET",
                f"/v1/admin/offers/{offer_id}",
                headers={"Authorization": f"Bearer {ADMIN}"},
                timeout=5,
            )
            lost += status != 200
        return lost

    def _report(self, stored: Counter, lost_writes: int) -> dict[str, Any]:
        samples = self.load.samples
        failed = sum(not s.ok for s in samples)
        acked = Counter(self.load.acked_events)
        faults = []
        for f in self.faults:
            window = [s.latency_ms for s in samples if f["start_s"] <= s.sent <= f["end_s"]]
            faults.append(
                {
                    **f,
                    "requests": len(window),
                    "failed": sum(not s.ok for s in samples if f["start_s"] <= s.sent <= f["end_s"]),
                    "p99_ms": round(float(np.percentile(window, 99)), 2) if window else None,
                }
            )
        latencies = [s.latency_ms for s in samples if s.ok]
        return {
            "requests": len(samples),
            "failed": failed,
            "fallbacks": sum(s.ok and s.fallback for s in samples),
            "availability": round((len(samples) - failed) / len(samples), 6) if samples else None,
            "failed_by_status": dict(Counter(str(s.status) for s in samples if not s.ok)),
            "duration_s": round(self.load.now(), 1),
            "rate_per_region": self.rate,
            "regions": list(REGIONS),
            "p50_ms": round(float(np.percentile(latencies, 50)), 2) if latencies else None,
            "p99_ms": round(float(np.percentile(latencies, 99)), 2) if latencies else None,
            "admin_writes_acked": len(self.acked_writes),
            "admin_writes_lost": lost_writes,
            "admin_writes_refused": self.write_failures,
            "events_acked": len(acked),
            "events_lost": sum(1 for e in acked if stored[e] == 0),
            "events_duplicated": sum(n - 1 for n in stored.values() if n > 1),
            "faults": faults,
            # Each failed answer (the first 200): when, what and how, for the timeline's spikes.
            "failures": [
                {
                    "sent_s": round(s.sent, 3),
                    "kind": s.kind,
                    "region": s.region,
                    "status": s.status,
                    "latency_ms": round(s.latency_ms, 1),
                }
                for s in samples
                if not s.ok
            ][:200],
        }


async def _drill_event_ids(dsn: str) -> list[str]:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT request_id FROM events WHERE kind = 'click' AND request_id LIKE 'drill-%'")
        return [r[0] for r in rows]
    except asyncpg.UndefinedTableError:
        return []
    finally:
        await conn.close()


def _offer(offer_id: str, sku: str, region: str) -> dict[str, Any]:
    currency = {"GB": "GBP"}.get(region, "EUR")
    return {
        "id": offer_id,
        "sku": sku,
        "title": f"Item {sku}",
        "price": 9.99,
        "currency": currency,
        "regions": [region],
        "stock": 10,
    }


def write_outputs(out: Path, report: dict[str, Any], samples: list[Any]) -> None:
    (out / "report.json").write_text(json.dumps(report, indent=2))
    goal = "met" if report["availability"] is not None and report["availability"] >= 0.99999 else "missed"
    lines = [
        "# Availability drill",
        "",
        f"{report['requests']:,} answers over {report['duration_s']} s ({report['rate_per_region']:g}/s in each of "
        f"{', '.join(report['regions'])}), through HAProxy to two replicas a region, two origins on one PostgreSQL"
        " (a primary and its synchronous standby).",
        "",
        f"- **availability seen by shoppers: {report['availability']:.5%}** ({report['failed']} failed of "
        f"{report['requests']:,}; goal 99.999%: {goal}); failures by status {report['failed_by_status'] or '{}'}",
        f"- fallbacks (served, counted apart): {report['fallbacks']}",
        f"- latency of successful answers: p50 {report['p50_ms']} ms, p99 {report['p99_ms']} ms",
        f"- admin writes acknowledged {report['admin_writes_acked']}, lost **{report['admin_writes_lost']}** "
        f"(refused by every origin at that moment, so not acknowledged: {report['admin_writes_refused']})",
        f"- events acknowledged {report['events_acked']}, lost **{report['events_lost']}**, duplicated "
        f"**{report['events_duplicated']}**",
        "",
        "| fault | heal s | requests | failed | p99 ms |",
        "|---|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {f['name']} | {f['heal_s']:.2f} | {f['requests']} | {f['failed']} | {f['p99_ms']} |"
        for f in report["faults"]
    ]
    stops = [stop for f in report["faults"] for stop in f.get("stops", [])]
    if stops:
        lines += [
            "",
            f"Rolling restart: each edge got SIGTERM, drained for {EDGE_DRAIN_S:g} s (its /readyz 503, HAProxy moving "
            f"its traffic) and exited with {sorted({s['exit'] for s in stops})} after "
            f"{min(s['stop_s'] for s in stops):.2f} to {max(s['stop_s'] for s in stops):.2f} s.",
        ]
    (out / "report.md").write_text("\n".join(lines) + "\n")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    end = max((s.sent for s in samples), default=1.0)
    edges = np.arange(0, end + 0.5, 0.5)
    sent = np.array([s.sent for s in samples])
    latency = np.array([s.latency_ms for s in samples])
    bad = np.array([not s.ok for s in samples])
    p99, errors = [], []
    for lo, hi in zip(edges[:-1], edges[1:]):
        mask = (sent >= lo) & (sent < hi)
        p99.append(float(np.percentile(latency[mask], 99)) if mask.any() else np.nan)
        errors.append(int(bad[mask].sum()))
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(12, 6), sharex=True)
    top.plot(edges[:-1], p99, color="#3b7dd8", lw=1.2)
    top.set_ylabel("p99 latency, ms (0.5 s bins)")
    top.set_yscale("log")
    bottom.bar(edges[:-1], errors, width=0.5, align="edge", color="#c9463d")
    bottom.set_ylabel("failed answers")
    bottom.set_xlabel("seconds since the load started")
    for i, f in enumerate(report["faults"]):
        for ax in (top, bottom):
            ax.axvspan(f["start_s"], f["end_s"], color="#e07b39", alpha=0.18)
        top.annotate(
            f["name"],
            (f["start_s"], 1.0),
            xycoords=("data", "axes fraction"),
            rotation=90,
            va="top",
            fontsize=7,
            color="#8a4a1a",
            xytext=(2, -2),
            textcoords="offset points",
        )
    fig.suptitle(
        f"availability drill: {report['availability']:.5%} of {report['requests']:,} answers served "
        f"({report['failed']} failed)"
    )
    fig.tight_layout()
    fig.savefig(out / "timeline.png", dpi=100)
    plt.close(fig)


def train_bundles(out: Path) -> tuple[Path, Path]:
    """Two models (two synthetic shops), the second one rolled out during the drill."""
    from models.synthetic import write_synthetic_transactions
    from models.train import train_bundle

    bundles = []
    for seed in (7, 8):
        data = write_synthetic_transactions(out / f"shop-{seed}.csv.gz", seed=seed)
        bundle = out / f"bundle-{seed}"
        train_bundle(data, bundle, progress=False)
        bundles.append(bundle)
    return bundles[0], bundles[1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.availability",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--rate", type=float, default=60.0, help="requests per second in each region (default 60)")
    p.add_argument("--settle", type=float, default=3.0, help="seconds of steady load between faults (default 3)")
    p.add_argument(
        "--bundles",
        type=Path,
        nargs=2,
        default=None,
        metavar=("FIRST", "SECOND"),
        help="two model bundles (default: two trained on synthetic shops)",
    )
    args = p.parse_args(argv)
    why = missing()
    if why:
        print(f"benchmarks.availability: {why}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    _progress("training two models", started)
    bundles = tuple(args.bundles) if args.bundles else train_bundles(args.out)
    drill = Drill(args.out, bundles, args.rate, args.settle)  # type: ignore[arg-type]
    try:
        _progress("starting PostgreSQL, two origins, four edges and HAProxy", started)
        drill.start()
        report = drill.run()
    finally:
        drill.stop()
    write_outputs(args.out, report, drill.load.samples)
    print((args.out / "report.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
