"""The availability drill's real parts: a PostgreSQL cluster of its own (initdb, pg_ctl), HAProxy with health
checks in front of each region's edge replicas, and a fixed-rate load generator that records every answer."""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from edgerec.cli.process import Service, free_port

PG_BIN_ROOT = Path("/usr/lib/postgresql")


def pg_bin() -> Path | None:
    """The newest installed PostgreSQL's bin directory (Debian's layout), or None."""
    versions = sorted(
        (p for p in PG_BIN_ROOT.glob("*/bin") if (p / "initdb").exists()),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    return versions[-1] if versions else None


def missing() -> str | None:
    """Why the drill cannot run here, or None."""
    if pg_bin() is None:
        return "PostgreSQL server binaries (initdb, pg_ctl) are not installed: apt-get install postgresql"
    if shutil.which("haproxy") is None:
        return "haproxy is not installed: apt-get install -y --no-install-recommends haproxy"
    return None


class PgCluster:
    """A PostgreSQL cluster of the drill's own in a temporary directory, on a free loopback port, trust auth. As
    root, PostgreSQL runs as the `postgres` user (it refuses root), so the directory is a fresh one in the system's
    temporary directory, which that user can reach (a root-only parent, such as pytest's, would lock it out).

    `add_standby` makes a streaming standby (pg_basebackup) on a second port and turns replication synchronous, so
    a commit is acknowledged only once the standby has it: `failover` then crashes the primary and promotes the
    standby without losing an acknowledged write. `dsn` names both servers with target_session_attrs=read-write,
    so clients reconnect to whichever is the primary, as a libpq multi-host DSN does in production."""

    def __init__(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="edgerec-drill-pg-"))
        self.data = self.directory / "data"
        self.port = free_port()
        self.log = self.directory / "postgres.log"
        self.standby_data = self.directory / "standby"
        self.standby_port: int | None = None
        self.standby_log = self.directory / "standby.log"
        self.bin = pg_bin()
        assert self.bin is not None
        self._user = "postgres" if os.geteuid() == 0 else None

    def _run(self, *args: str, timeout: float = 60) -> None:
        command = [str(self.bin / args[0]), *args[1:]]
        if self._user:
            command = ["runuser", "-u", self._user, "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        if result.returncode != 0:
            output = result.stderr[-800:] or result.stdout[-800:]
            raise RuntimeError(f"{args[0]} failed ({result.returncode}): {output}")

    def init(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        if self._user:
            entry = pwd.getpwnam(self._user)
            os.chown(self.directory, entry.pw_uid, entry.pw_gid)
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")

    def _options(self) -> str:
        return f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 -c fsync=on -c max_connections=200"

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", self._options(), "-w", "-t", "60", "start")

    def restart(self) -> None:
        self._run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-l",
            str(self.log),
            "-o",
            self._options(),
            "-m",
            "fast",
            "-w",
            "-t",
            "60",
            "restart",
        )

    def add_standby(self) -> None:
        """A streaming standby of the running primary, then synchronous replication to it (set on the primary
        only, after the base backup, so the standby does not inherit it and, once promoted, does not wait)."""
        self.standby_port = free_port()
        self._run(
            "pg_basebackup", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-D", str(self.standby_data),
            "-R", "-X", "stream", "-c", "fast", timeout=120,
        )  # fmt: skip
        options = (
            f"-p {self.standby_port} -k {self.directory} -c listen_addresses=127.0.0.1 -c max_connections=200"
            " -c hot_standby=on -c wal_retrieve_retry_interval=200ms"
        )
        self._run(
            "pg_ctl", "-D", str(self.standby_data), "-l", str(self.standby_log), "-o", options, "-w", "-t", "60",
            "start",
        )  # fmt: skip
        asyncio.run(self._replicate_synchronously())

    async def _replicate_synchronously(self) -> None:
        import asyncpg  # type: ignore[import-untyped]

        conn = await asyncpg.connect(f"postgresql://postgres@127.0.0.1:{self.port}/postgres")
        try:
            await conn.execute("ALTER SYSTEM SET synchronous_standby_names = '*'")
            await conn.execute("SELECT pg_reload_conf()")
            deadline = time.monotonic() + 30
            while await conn.fetchval("SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'sync'") == 0:
                if time.monotonic() > deadline:
                    raise RuntimeError("the standby did not become a synchronous replica within 30 s")
                await asyncio.sleep(0.1)
        finally:
            await conn.close()

    def failover(self) -> None:
        """The primary crashes (`pg_ctl stop -m immediate`: no shutdown checkpoint) and the standby is promoted."""
        assert self.standby_port is not None, "add_standby first"
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop", timeout=60)
        self._run("pg_ctl", "-D", str(self.standby_data), "-w", "-t", "60", "promote", timeout=90)

    def stop(self) -> None:
        for data in (self.data, self.standby_data):
            if not (data / "PG_VERSION").exists():
                continue
            try:
                self._run("pg_ctl", "-D", str(data), "-m", "fast", "-w", "stop", timeout=60)
            except (RuntimeError, subprocess.TimeoutExpired):
                pass
        shutil.rmtree(self.directory, ignore_errors=True)

    @property
    def dsn(self) -> str:
        if self.standby_port is None:
            return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        hosts = f"127.0.0.1:{self.port},127.0.0.1:{self.standby_port}"
        return f"postgresql://postgres@{hosts}/postgres?target_session_attrs=read-write"


HAPROXY_CFG = """global
    maxconn 4096

defaults
    mode http
    timeout connect 1s
    timeout client 30s
    timeout server 5s
    timeout queue 5s
    option redispatch
    # A request that reached no replica (refused, reset before an answer) goes to the other one.
    retries 3
{frontends}
"""

FRONTEND = """
frontend {name}
    bind 127.0.0.1:{port}
    acl events path_beg /v1/events
    use_backend {name}_events if events
    default_backend {name}

backend {name}
    option httpchk GET /readyz
    http-check expect status 200
    # Reads are idempotent: retried on another replica after a dead connection or an empty answer.
    retry-on conn-failure empty-response response-timeout
    default-server inter 250ms fastinter 100ms fall 2 rise 2
{servers}

backend {name}_events
    option httpchk GET /readyz
    http-check expect status 200
    # Events carry an event_id (idempotency key): one that reached an edge which died before answering is retried
    # on another replica like a read, and stored once at the origin.
    retry-on conn-failure empty-response response-timeout
    default-server inter 250ms fastinter 100ms fall 2 rise 2
{servers}
"""


def haproxy_service(workdir: Path, regions: dict[str, list[Service]]) -> tuple[Service, dict[str, str]]:
    """HAProxy in front of each region's replicas; returns the service and each region's URL."""
    ports = {region: free_port() for region in regions}
    frontends = "".join(
        FRONTEND.format(
            name=region.lower(),
            port=ports[region],
            servers="\n".join(
                f"    server {region.lower()}{i} 127.0.0.1:{edge.port} check" for i, edge in enumerate(edges, 1)
            ),
        )
        for region, edges in regions.items()
    )
    config = workdir / "haproxy.cfg"
    config.write_text(HAPROXY_CFG.format(frontends=frontends))
    check = subprocess.run(
        [shutil.which("haproxy") or "haproxy", "-c", "-f", str(config)], capture_output=True, text=True
    )
    if check.returncode != 0:
        raise RuntimeError(f"haproxy refused its configuration: {check.stdout}{check.stderr}")
    service = Service(
        "haproxy",
        next(iter(ports.values())),
        workdir / "logs" / "haproxy.log",
        argv=[shutil.which("haproxy") or "haproxy", "-db", "-f", str(config)],
    )
    return service, {region: f"http://127.0.0.1:{port}" for region, port in ports.items()}


@dataclass
class Sample:
    sent: float  # seconds since the run's start
    latency_ms: float
    ok: bool
    kind: str  # "recommendation" or "event"
    region: str
    fallback: bool = False
    status: int = 0


@dataclass
class LoadGenerator:
    """Requests at a fixed rate per region (open loop: a slow answer does not slow the sending), through the load
    balancer, each recorded. A share of them are events, each with a request_id of its own and an event_id (so
    that the balancer may retry them), acknowledged or not."""

    urls: dict[str, str]
    rate_per_region: float
    skus: list[str]
    event_share: float = 0.2
    samples: list[Sample] = field(default_factory=list)
    acked_events: list[str] = field(default_factory=list)
    started: float = 0.0

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def start(self) -> None:
        self.started = time.monotonic()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def now(self) -> float:
        return time.monotonic() - self.started

    async def _one(self, session: aiohttp.ClientSession, region: str, n: int) -> None:
        sent = self.now()
        is_event = (n % max(1, round(1 / self.event_share))) == 0 if self.event_share > 0 else False
        sku = self.skus[n % len(self.skus)]
        request_id = f"drill-{region}-{n}"
        if is_event:
            path, payload = (
                "/v1/events",
                {
                    "events": [
                        {
                            "type": "click",
                            "request_id": request_id,
                            "event_id": f"click-{n}",
                            "offer_ids": [f"{region}-{sku}"],
                        }
                    ]
                },
            )
        else:
            path, payload = "/v1/recommendations", {"region": region, "k": 10, "recent_items": [sku]}
        status, fallback = 0, False
        try:
            async with session.post(
                self.urls[region] + path, json=payload, timeout=aiohttp.ClientTimeout(total=10)
            ) as resp:
                status = resp.status
                body: Any = await resp.json(content_type=None)
                fallback = bool(isinstance(body, dict) and body.get("fallback"))
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError):
            pass
        ok = status == (202 if is_event else 200)
        if ok and is_event:
            self.acked_events.append(request_id)
        self.samples.append(
            Sample(
                sent,
                (self.now() - sent) * 1000,
                ok,
                "event" if is_event else "recommendation",
                region,
                fallback,
                status,
            )
        )

    async def _run(self) -> None:
        connector = aiohttp.TCPConnector(limit=256)
        async with aiohttp.ClientSession(connector=connector) as session:
            tasks: set[asyncio.Task] = set()
            n = 0
            interval = 1 / self.rate_per_region
            while not self._stop.is_set():
                due = self.started + n * interval
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                for region in self.urls:
                    task = asyncio.create_task(self._one(session, region, n))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                n += 1
            if tasks:
                await asyncio.wait(tasks, timeout=15)
