"""Start, probe and stop edgerec services as real processes on loopback (used by the demo, tests and benchmarks)."""

from __future__ import annotations

import json
import secrets
import ssl
import time
from pathlib import Path
from typing import Any

from edgerec.cli.process import Service, free_port, http_call, http_json


def ensure_signing_keys(workdir: Path) -> tuple[Path, Path]:
    """The origin's Ed25519 key pair under `workdir/keys` (made on first use): (private PEM, public PEM)."""
    from origin_sync.wire.signing import generate_key_pair

    private, public = workdir / "keys" / "signing_key.pem", workdir / "keys" / "signing_key.pub.pem"
    if not (private.exists() and public.exists()):
        generate_key_pair(workdir / "keys")
    return private, public


def format_region_tokens(tokens: dict[str, str | list[str]]) -> str:
    """{"GB": "tok", "DE": ["new", "old"]} -> "DE=new|old,GB=tok" (EDGEREC_REGION_TOKENS)."""
    return ",".join(f"{r}={'|'.join([t] if isinstance(t, str) else t)}" for r, t in sorted(tokens.items()))


# Tests, benchmarks and the demo drive services from one loopback address, one "client" far over any per-client
# limit a deployment would set; they get limits no run reaches (the check still runs on every request, so its cost
# is measured). A test of the limits themselves passes its own values in extra_env / env.
HARNESS_EDGE_LIMITS = {"EDGEREC_RATE_LIMIT_RPS": "1000000", "EDGEREC_RATE_LIMIT_BURST": "1000000"}
# No load balancer watches the harness's services (the availability drill's HAProxy does: it passes a window of its
# own to the edges), so a stop does not wait out a drain window; the rest of the graceful stop runs as deployed.
HARNESS_EDGE_STOP = HARNESS_ORIGIN_STOP = {"EDGEREC_DRAIN_S": "0"}
HARNESS_ORIGIN_LIMITS = {
    "EDGEREC_ADMIN_RATE_LIMIT_RPS": "1000000",
    "EDGEREC_ADMIN_RATE_LIMIT_BURST": "1000000",
    "EDGEREC_SYNC_RATE_LIMIT_RPS": "1000000",
    "EDGEREC_SYNC_RATE_LIMIT_BURST": "1000000",
}


def origin_service(
    workdir: Path,
    port: int,
    admin_token: str,
    sync_token: str | None = None,
    region_tokens: dict[str, str | list[str]] | None = None,
    dsn: str | None = None,
    extra_args: list[str] | None = None,
    extra_env: dict[str, str] | None = None,
    name: str = "origin",
) -> Service:
    """An origin signing with `workdir/keys/signing_key.pem`; edges sync with `sync_token` (every region) or the
    per-region `region_tokens`."""
    private_key, _ = ensure_signing_keys(workdir)
    env = {
        **HARNESS_ORIGIN_LIMITS,
        **HARNESS_ORIGIN_STOP,
        "EDGEREC_ADMIN_TOKEN": admin_token,
        "EDGEREC_SIGNING_KEY": str(private_key),
    }
    if sync_token:
        env["EDGEREC_SYNC_TOKEN"] = sync_token
    if region_tokens:
        env["EDGEREC_REGION_TOKENS"] = format_region_tokens(region_tokens)
    if dsn:
        env["EDGEREC_ORIGIN_DSN"] = dsn
    slug = name.replace(" ", "-")
    return Service(
        name=name,
        args=[
            "origin",
            "serve",
            "--port",
            str(port),
            "--db",
            str(workdir / "origin" / "origin.db"),
            "--blob-dir",
            str(workdir / slug / "blobs"),
            *(extra_args or []),
        ],
        port=port,
        log_path=workdir / "logs" / f"{slug}.log",
        env={**env, **(extra_env or {})},
    )


def edge_service(
    workdir: Path,
    region: str,
    port: int,
    origin_url: str,
    sync_token: str,
    extra_args: list[str] | None = None,
    extra_env: dict[str, str] | None = None,
) -> Service:
    """An edge serving `region` (one market code, or several comma-separated)."""
    name = region.replace(",", "-")
    return Service(
        name=f"edge {region}",
        args=[
            "edge",
            "serve",
            "--port",
            str(port),
            "--regions",
            region,
            "--origin",
            origin_url,
            "--data-dir",
            str(workdir / f"edge-{name}"),
            *(extra_args or []),
        ],
        port=port,
        log_path=workdir / "logs" / f"edge-{name}.log",
        own_group=True,  # with --workers, a kill takes the workers too
        env={
            **HARNESS_EDGE_LIMITS,
            **HARNESS_EDGE_STOP,
            "EDGEREC_SYNC_TOKEN": sync_token,
            "EDGEREC_ORIGIN_PUBLIC_KEY": str(ensure_signing_keys(workdir)[1]),
            **(extra_env or {}),
        },
    )


def admin_headers(admin_token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {admin_token}"}


def bundle_upload(bundle_dir: Path) -> tuple[dict[str, Any], bytes]:
    """(manifest, the msgpack body of POST /v1/admin/models) of a bundle directory (model.onnx + manifest.json)."""
    import msgpack

    manifest = json.loads((Path(bundle_dir) / "manifest.json").read_text())
    model = (Path(bundle_dir) / "model.onnx").read_bytes()
    return manifest, msgpack.packb({"manifest": manifest, "model": model}, use_bin_type=True)


def publish_bundle(
    origin_url: str, admin_token: str, bundle_dir: Path, *, state: str, ssl_context: ssl.SSLContext | None = None
) -> dict[str, Any]:
    """Upload a model bundle (model.onnx + manifest.json) to the origin in `state`: "active" makes it the model every
    edge serves, "candidate" a model experiments may name, "published" only stores it (see the README's models)."""
    _, body = bundle_upload(bundle_dir)
    status, _, raw = http_call(
        origin_url,
        "POST",
        f"/v1/admin/models?state={state}",
        body,
        {"Content-Type": "application/x-msgpack", **admin_headers(admin_token)},
        timeout=60,
        ssl_context=ssl_context,
    )
    if status != 201:
        raise RuntimeError(f"publishing the model failed: HTTP {status} {raw[:300]!r}")
    return json.loads(raw)


def put_offer(
    origin_url: str, admin_token: str, offer: dict[str, Any], ssl_context: ssl.SSLContext | None = None
) -> dict[str, Any]:
    status, body = http_json(
        origin_url, "PUT", f"/v1/admin/offers/{offer['id']}", offer, admin_headers(admin_token), ssl_context=ssl_context
    )
    if status != 200:
        raise RuntimeError(f"upserting offer {offer['id']} failed: HTTP {status} {body}")
    return body


class Cluster:
    """An origin and the edges started against it on loopback, with the credentials they share (the admin token, one
    sync token for every region and one token per region, the fleet's pseudonym key): the tests' and the benchmarks'
    one way to stand up edgerec. `stop()` stops every edge it started, then the origin."""

    def __init__(
        self,
        workdir: Path,
        bundle: Path | None = None,
        regions: tuple[str, ...] = ("GB", "DE", "FR"),
        *,
        dsn: str | None = None,
        origin_env: dict[str, str] | None = None,
    ) -> None:
        self.workdir = workdir
        self.bundle = bundle  # what publish() uploads unless told another
        self.admin_token = secrets.token_urlsafe(24)
        self.sync_token = secrets.token_urlsafe(24)  # valid for every region (an edge serving several)
        # An edge of one region presents that region's token: a GB token may sync only GB.
        self.region_tokens = {r: secrets.token_urlsafe(24) for r in regions}
        self.pseudonym_key = secrets.token_urlsafe(24)  # the same on every edge, as in a deployment
        self.origin = origin_service(
            workdir, free_port(), self.admin_token, self.sync_token, self.region_tokens, dsn=dsn, extra_env=origin_env
        )
        self.edges: list[Service] = []

    def start_origin(self, timeout_s: float = 30.0) -> None:
        self.origin.start()
        self.origin.wait_ready("/healthz", timeout_s)

    def publish(self, bundle: Path | None = None, state: str = "active") -> dict[str, Any]:
        """Upload a bundle (this cluster's by default) in `state` (see publish_bundle)."""
        chosen = bundle or self.bundle
        assert chosen is not None, "no bundle to publish"
        return publish_bundle(self.origin.url, self.admin_token, chosen, state=state, ssl_context=self.origin.tls)

    def put_offer(self, offer: dict[str, Any]) -> dict[str, Any]:
        return put_offer(self.origin.url, self.admin_token, offer, ssl_context=self.origin.tls)

    def put_offers(self, offers: list[dict[str, Any]]) -> int:
        """Upsert many offers, a transaction per thousand (POST /v1/admin/offers); any refused raises RuntimeError.
        Returns the data version after the last."""
        version = 0
        for start in range(0, len(offers), 1000):
            answer = self.admin("POST", "/v1/admin/offers", {"offers": offers[start : start + 1000]})
            refused = [r for r in answer["results"] if r["status"] == "refused"]
            if refused:
                raise RuntimeError(f"{len(refused)} offers refused, the first: {refused[0]}")
            version = answer["data_version"]
        return version

    def admin(self, method: str, path: str, payload: Any = None, timeout: float = 60.0) -> Any:
        """One admin call; an answer of 400 or above raises RuntimeError."""
        status, body = http_json(
            self.origin.url,
            method,
            path,
            payload,
            admin_headers(self.admin_token),
            timeout,
            ssl_context=self.origin.tls,
        )
        if status >= 400:
            raise RuntimeError(f"{method} {path}: HTTP {status}: {body}")
        return body

    def edge(
        self,
        region: str,
        port: int | None = None,
        args: list[str] | None = None,
        env: dict[str, str] | None = None,
        origin_url: str | None = None,
        label: str | None = None,
    ) -> Service:
        """An edge of `region` (one market, or several comma-separated) against this origin (or `origin_url`, a
        proxy in front of it), not started yet. Its data directory and log are `label` under the work directory
        (default edge-<region>); while another edge of the cluster runs on that directory, `<label>-2`, `-3` ..."""
        token = self.region_tokens.get(region, self.sync_token)
        env = {"EDGEREC_SYNC_BACKOFF_MAX_S": "1", "EDGEREC_PSEUDONYM_KEY": self.pseudonym_key, **(env or {})}
        edge = edge_service(self.workdir, region, port or free_port(), origin_url or self.origin.url, token, args, env)
        data_dir = edge.args.index("--data-dir") + 1
        if label is not None:
            edge.args[data_dir], edge.log_path = str(self.workdir / label), edge.log_path.with_name(f"{label}.log")
        # An edge started after the last one on a directory stopped takes it over: a restart on the same disk.
        running = {
            e.args[e.args.index("--data-dir") + 1]
            for e in self.edges
            if e.process is not None and e.process.poll() is None
        }
        base, log, n = edge.args[data_dir], edge.log_path, 1
        while edge.args[data_dir] in running:
            n += 1
            edge.args[data_dir] = f"{base}-{n}"
            edge.log_path = log.with_name(f"{log.stem}-{n}{log.suffix}")
        return edge

    def start_edges(self, *edges: Service, ready: bool = True, timeout_s: float = 30.0) -> list[Service]:
        """Start the edges all at once, then wait for each to be ready (their start-ups overlap)."""
        for edge in edges:
            self.edges.append(edge.start())
        if ready:
            for edge in edges:
                edge.wait_ready("/readyz", timeout_s)
        return list(edges)

    def start_edge(
        self,
        region: str,
        port: int | None = None,
        ready: bool = True,
        args: list[str] | None = None,
        env: dict[str, str] | None = None,
        origin_url: str | None = None,
        label: str | None = None,
    ) -> Service:
        return self.start_edges(self.edge(region, port, args, env, origin_url, label), ready=ready)[0]

    def wait_for_version(self, version: int, offers: dict[str, int] | None = None, timeout_s: float = 60.0) -> None:
        """Until every started edge serves data version `version` or later (and, with `offers`, exactly that many
        offers in each of those regions it serves)."""
        deadline = time.monotonic() + timeout_s
        for edge in self.edges:
            regions = edge.args[edge.args.index("--regions") + 1].split(",")
            wanted = {r: n for r, n in (offers or {}).items() if r in regions}
            while True:
                status, _, raw = http_call(edge.url, "GET", "/readyz", ssl_context=edge.tls)
                ready = json.loads(raw) if status == 200 else {}
                served = ready.get("regions", {})
                if (ready.get("data_version") or 0) >= version and all(served.get(r) == n for r, n in wanted.items()):
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"{edge.name} serves {ready.get('data_version')} {served} (wanted {version}"
                        f"{f' with {offers}' if offers else ''})"
                    )
                time.sleep(0.05)

    def stop(self) -> None:
        for edge in self.edges:  # every edge at once, then the origin
            edge.terminate()
        for edge in self.edges:
            edge.wait_stopped()
        self.origin.stop()
