"""Fault drills: real origin and edge processes, with a mangling proxy between them or processes killed.

Each drill proves three things: the edge keeps serving its last good version, it never serves a torn or
unverified state, and it recovers on its own when the fault ends.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import ssl
import subprocess
import threading
import time
from pathlib import Path

import msgpack
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edgerec.cli.process import http_call
from edgerec.core.tls import server_context
from tests.conftest import (
    edge_tls_env,
    https_cluster,
    make_offer,
    missing_part,
    readyz,
    renew_in_place,
    served,
    stocked,
    sync_error_count,
    wait_until,
)
from tests.proxy_support import LoopbackProxy


class SyncProxy(LoopbackProxy):
    """A loopback HTTP proxy between an edge and the origin that can mangle the origin's answers (over TLS on
    either side with `server_tls` and `client_tls`, as LoopbackProxy)."""

    def __init__(
        self, origin_url: str, server_tls: ssl.SSLContext | None = None, client_tls: ssl.SSLContext | None = None
    ) -> None:
        super().__init__(origin_url, server_tls, client_tls)
        self.mode = "pass"
        self.recorded_deltas: bytes | None = None
        self.mangled = 0
        self.client_subjects: set[str] = set()  # the CNs of the client certificates the edge presented (HTTPS)
        self._other_key = Ed25519PrivateKey.generate()

    async def _forward(self, request: web.Request, query: dict[str, str]) -> tuple[int, bytes, dict, str]:
        headers = {k: v for k, v in request.headers.items() if k.lower() in ("authorization", "x-edgerec-protocol")}
        async with self._session.get(self.origin_url + request.path, params=query, headers=headers) as resp:
            body = await resp.read()
            out_headers = {
                k: v
                for k, v in resp.headers.items()
                if k.lower() in ("x-edgerec-signature", "x-edgerec-key-id", "x-edgerec-protocol")
            }
            return resp.status, body, out_headers, resp.content_type or "application/octet-stream"

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        peer = request.transport.get_extra_info("peercert") if request.transport is not None else None
        if peer:
            self.client_subjects.update(v for rdn in peer["subject"] for k, v in rdn if k == "commonName")
        query = dict(request.query)
        is_deltas = request.path == "/v1/sync/deltas"
        status, body, headers, content_type = await self._forward(request, query)
        mode = self.mode  # read after the (long-polled) answer: a fault switched on mid-poll applies to it
        if status == 200 and is_deltas and mode == "pass" and msgpack.unpackb(body)["payload"]:
            self.recorded_deltas = body
        if status == 200 and is_deltas and mode == "replay" and self.recorded_deltas is not None:
            self.mangled += 1
            body = self.recorded_deltas  # an old, well-signed batch, sent again
        elif status == 200 and is_deltas and mode == "reorder":
            # The batch that starts one version later: well signed, but not the one that follows.
            self.mangled += 1
            status, body, headers, content_type = await self._forward(
                request, {**query, "since": str(int(query["since"]) + 1), "wait": "0"}
            )
        elif status == 200 and mode != "pass":
            body = self._mangle(mode, request.path, body)
        return web.Response(body=body, status=status, headers=headers, content_type=content_type)

    def _mangle(self, mode: str, path: str, body: bytes) -> bytes:
        is_blob = path.startswith("/v1/sync/blobs/")
        if mode == "corrupt_blob" and is_blob or mode in ("truncate", "flip", "bad_signature") and not is_blob:
            self.mangled += 1
        if mode == "corrupt_blob" and is_blob:
            return body[:1000] + bytes([body[1000] ^ 0x55]) + body[1001:]
        if is_blob:
            return body
        if mode == "truncate":
            return body[: max(1, len(body) * 2 // 3)]
        if mode == "flip":
            i = len(body) - 20
            return body[:i] + bytes([body[i] ^ 0x01]) + body[i + 1 :]
        if mode == "bad_signature":
            envelope = msgpack.unpackb(body)
            envelope["sig"] = self._other_key.sign(envelope["payload"])  # same key id, wrong key
            return msgpack.packb(envelope)
        return body


def _price_of(answer: dict, offer_id: str) -> float | None:
    return next((o["price"] for o in answer["offers"] if o["offer_id"] == offer_id), None)


def _assert_consistent(answer: dict, version_prices: dict[int, float], offer_id: str) -> None:
    """A served answer shows the price that belongs to its data version: never a mix of versions."""
    assert _price_of(answer, offer_id) == version_prices[answer["data_version"]], answer


def refuse_then_recover(cluster, edge, proxy: SyncProxy, mode: str, sku: str, prices: tuple[float, float]) -> None:
    """A good version reaches the edge through the proxy; under `mode` the next one is mangled on the way: the edge
    refuses it, counts and logs the refusal, and keeps serving the good version whole; once the proxy passes answers
    again, the edge takes the new version."""
    request = {"recent_items": [sku], "k": 30}
    target = f"GB-{sku}"
    version_prices: dict[int, float] = {}
    good = cluster.put_offer(make_offer(target, sku, price=prices[0]))["data_version"]
    version_prices[good] = prices[0]
    wait_until(lambda: served(edge, request)["data_version"] == good, what="the good version")
    wait_until(lambda: proxy.recorded_deltas is not None, what="a recorded batch")
    refused_before = sum(readyz(edge)["rejected_payloads"].values())

    proxy.mangled = 0
    proxy.mode = mode
    bad = cluster.put_offer(make_offer(target, sku, price=prices[1]))["data_version"]
    version_prices[bad] = prices[1]
    wait_until(lambda: proxy.mangled >= 2, what="mangled answers")
    wait_until(lambda: sum(readyz(edge)["rejected_payloads"].values()) > refused_before, what="a counted refusal")
    for _ in range(20):
        answer = served(edge, request)
        assert answer["data_version"] == good
        _assert_consistent(answer, version_prices, target)
    state = readyz(edge)
    assert state["ready"] and state["data_version"] == good
    metrics = http_call(edge.url, "GET", "/metrics")[2].decode()
    assert "edgerec_sync_rejected_total{reason=" in metrics
    log_text = edge.log_path.read_text()
    assert "refused" in log_text and cluster.region_tokens["GB"] not in log_text

    proxy.mode = "pass"
    wait_until(lambda: served(edge, request)["data_version"] == bad, what="recovery")
    _assert_consistent(served(edge, request), version_prices, target)


@pytest.mark.parametrize("mode", ["truncate", "flip", "replay", "reorder", "bad_signature"])
def test_a_mangled_delta_is_refused_and_the_edge_keeps_its_last_good_version(module_seeded, catalog_skus, mode):
    # The fault is on the proxy's wire, not at the origin: the modes share one origin, each with an edge (its own
    # directory and log) and a proxy of its own.
    with SyncProxy(module_seeded.origin.url) as proxy:
        edge = module_seeded.start_edge("GB", origin_url=proxy.url, label=f"edge-GB-{mode}")
        try:
            refuse_then_recover(module_seeded, edge, proxy, mode, catalog_skus[0], (5.0, 6.0))
        finally:
            edge.stop()


@pytest.fixture
def mtls_cluster(tmp_path, bundle_dir, pki, catalog_skus):
    """An origin serving HTTPS that requires a client certificate of the PKI's CA (mutual TLS), reloading its
    certificate files every 0.2 s; its model published and 20 GB offers. The test's admin calls present an
    operator's certificate."""
    cluster = https_cluster(
        tmp_path,
        bundle_dir,
        pki,
        "--client-ca",
        str(pki.ca_file),
        "--require-client-cert",
        "--tls-reload-interval",
        "0.2",
        admin_cert=pki.issue("operator", "ops.example", common_name="ops.example"),
    )
    with stocked(cluster, catalog_skus[:20]):
        yield cluster


def test_a_delta_mangled_on_a_hop_that_re_originates_mutual_tls_is_refused(mtls_cluster, pki, catalog_skus):
    """TLS authenticates each hop, not what the origin signed: a hop the edge trusts (its certificate is from the
    edge's CA, it asks for and checks the edge's client certificate, and it reaches the origin with a client
    certificate of its own for the region) that mangles a delta gets it refused all the same."""
    hop_cert, hop_key = pki.issue("hop", "127.0.0.1", "localhost")
    server_tls = server_context(hop_cert, hop_key, client_ca_file=pki.ca_file, require_client_cert=True)
    client_tls = pki.client_context(pki.issue("hop-client", "edge.gb", common_name="edge.gb"))
    with SyncProxy(mtls_cluster.origin.url, server_tls=server_tls, client_tls=client_tls) as proxy:
        assert proxy.url.startswith("https://") and mtls_cluster.origin.url.startswith("https://")
        edge = mtls_cluster.start_edge("GB", origin_url=proxy.url, env=edge_tls_env(pki, cert=pki.edge_cert("GB")))
        for mode, prices in (("flip", (5.0, 6.0)), ("bad_signature", (7.0, 8.0))):
            refuse_then_recover(mtls_cluster, edge, proxy, mode, catalog_skus[0], prices)
        assert proxy.client_subjects == {"edge.gb"}  # the edge presented its certificate on the first hop


def _reloads(service) -> int:
    return service.log_path.read_text().count("reloaded the TLS certificate")


def test_an_untrusted_certificate_at_either_end_of_mutual_tls_stops_sync_never_serving(mtls_cluster, pki, catalog_skus):
    """The origin comes back with a certificate of a CA the edge does not trust, then the edge's client
    certificate is replaced by one of a CA the origin does not trust: each time the edge keeps serving its last
    version, counts the failed syncs and says why, and catches up once the right certificate is back on disk
    (reloaded by the running process, neither restarted)."""
    import trustme

    cluster = mtls_cluster
    sku = catalog_skus[0]
    request = {"recent_items": [sku], "k": 30}
    edge_cert = pki.edge_cert("GB")
    edge = cluster.start_edge("GB", env={**edge_tls_env(pki, cert=edge_cert), "EDGEREC_TLS_RELOAD_INTERVAL_S": "0.2"})
    first = cluster.put_offer(make_offer(f"GB-{sku}", sku, price=1.0))["data_version"]
    wait_until(lambda: served(edge, request)["data_version"] == first, what="the first version")

    rogue = trustme.CA()
    # The test's own admin calls trust both CAs, so that they reach the origin whichever certificate it shows.
    cluster.origin.tls.load_verify_locations(cafile=str(pki.write_ca(rogue, "rogue-ca.pem")))

    def keeps_serving(version: int, price: float, why: tuple[str, ...]) -> None:
        """Sync fails again and again (a newer version waits at the origin), the error says `why`, and the edge
        answers from `version` all along."""
        errors = sync_error_count(edge)
        wait_until(lambda: sync_error_count(edge) >= errors + 3, what="failed syncs counted")
        last = wait_until(
            lambda: (e := readyz(edge)["last_sync_error"] or "") and any(w in e for w in why) and e,
            what=f"the sync error naming one of {why}",
        )
        for _ in range(20):
            answer = served(edge, request)
            assert answer["data_version"] == version and _price_of(answer, f"GB-{sku}") == price, (answer, last)
            time.sleep(0.05)
        assert edge.process.poll() is None

    # 1. The origin redeployed with a certificate of another CA: new connections fail the edge's verification.
    cluster.origin.stop()
    renew_in_place(pki.issue("origin-rogue", "127.0.0.1", "localhost", ca=rogue), (pki.origin_cert, pki.origin_key))
    cluster.start_origin()
    second = cluster.put_offer(make_offer(f"GB-{sku}", sku, price=2.0))["data_version"]
    keeps_serving(first, 1.0, ("CERTIFICATE_VERIFY_FAILED",))
    reloads = _reloads(cluster.origin)
    renew_in_place(pki.issue("origin-renewed", "127.0.0.1", "localhost"), (pki.origin_cert, pki.origin_key))
    wait_until(lambda: _reloads(cluster.origin) > reloads, what="the origin reloading its certificate")
    wait_until(lambda: served(edge, request)["data_version"] == second, what="catching up with the right certificate")

    # 2. The edge's client certificate replaced by one of another CA; once the origin restarts, every new
    # connection presents it and the origin refuses the handshake.
    reloads = _reloads(edge)
    renew_in_place(pki.issue("client-rogue", "edge.gb", common_name="edge.gb", ca=rogue), edge_cert)
    wait_until(lambda: _reloads(edge) > reloads, what="the edge reloading its client certificate")
    cluster.origin.stop()
    cluster.start_origin()
    third = cluster.put_offer(make_offer(f"GB-{sku}", sku, price=3.0))["data_version"]
    # TLS 1.3: the client's side of the handshake is over before the origin checks its certificate, so the edge
    # sees the origin hang up (the origin's alert, when it is read, names the unknown CA).
    keeps_serving(second, 2.0, ("ServerDisconnectedError", "Connection reset by peer", "UNKNOWN_CA"))
    reloads = _reloads(edge)
    renew_in_place(pki.issue("client-GB-renewed", "edge.gb", common_name="edge.gb"), edge_cert)
    wait_until(lambda: _reloads(edge) > reloads, what="the edge reloading the right client certificate")
    wait_until(lambda: served(edge, request)["data_version"] == third, what="catching up with the right certificate")
    assert readyz(edge)["ready"]


def _second_bundle(bundle_dir: Path, out: Path) -> Path:
    """The same model with other bytes (an extra metadata entry): a new version for the edge to fetch."""
    import onnx

    model = onnx.load(str(bundle_dir / "model.onnx"))
    onnx.helper.set_model_props(model, {"drill": "second"})
    data = model.SerializeToString()
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    manifest.update(version=manifest["version"] + "-b", sha256=hashlib.sha256(data).hexdigest())
    out.mkdir(parents=True, exist_ok=True)
    (out / "model.onnx").write_bytes(data)
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


def test_a_corrupt_model_blob_is_refused_and_the_previous_version_served(seeded, catalog_skus, tmp_path):
    with SyncProxy(seeded.origin.url) as proxy:
        edge = seeded.start_edge("GB", origin_url=proxy.url)
        request = {"recent_items": catalog_skus[:5], "k": 10}
        first = served(edge, request)
        proxy.mode = "corrupt_blob"
        published = seeded.publish(_second_bundle(seeded.bundle, tmp_path / "b2"))
        wait_until(lambda: readyz(edge)["rejected_payloads"].get("blob", 0) >= 1, what="the blob refused")
        for _ in range(10):
            answer = served(edge, request)
            assert answer["model_version"] == first["model_version"]
            assert answer["data_version"] == first["data_version"]  # the model's version is not half-applied
        proxy.mode = "pass"
        answer = wait_until(
            lambda: (a := served(edge, request))["model_version"] == published["model_version"] and a,
            what="the new model",
        )
        assert answer["data_version"] == published["data_version"]
        # The blob is cached on disk under its sha256, verified.
        blobs = list((seeded.workdir / "edge-GB" / "blobs").iterdir())
        assert all(hashlib.sha256(b.read_bytes()).hexdigest() == b.name for b in blobs) and len(blobs) == 2


def test_the_origin_killed_mid_long_poll_and_restarted(seeded, catalog_skus):
    edge = seeded.start_edge("GB")
    request = {"recent_items": catalog_skus[:5], "k": 30}
    before = served(edge, request)
    time.sleep(0.3)  # the edge is now parked in a long-poll
    seeded.origin.kill()
    for _ in range(20):
        assert served(edge, request)["data_version"] == before["data_version"]
        time.sleep(0.05)
    state = readyz(edge)
    assert state["ready"] and state["seconds_since_origin_contact"] is not None
    seeded.origin.start()
    seeded.origin.wait_ready("/healthz")
    changed = seeded.put_offer(make_offer(f"GB-{catalog_skus[0]}", catalog_skus[0], price=0.42))
    answer = wait_until(
        lambda: (a := served(edge, request))["data_version"] == changed["data_version"] and a,
        what="recovery after the restart",
    )
    assert _price_of(answer, f"GB-{catalog_skus[0]}") == 0.42
    assert readyz(edge)["versions_behind"] == 0


def test_a_restarted_edge_serves_from_disk_with_the_origin_down_and_reports_staleness(seeded, catalog_skus):
    edge = seeded.start_edge("GB", env={"EDGEREC_MAX_STALENESS_S": "3600"})
    request = {"recent_items": catalog_skus[:5], "k": 30}
    last = seeded.put_offer(make_offer(f"GB-{catalog_skus[0]}", catalog_skus[0], price=0.77))["data_version"]
    wait_until(lambda: readyz(edge)["persisted_version"] == last, what="the copy on disk")
    edge.stop()
    seeded.origin.kill()
    started = time.monotonic()
    restarted = seeded.start_edge("GB", port=edge.port, env={"EDGEREC_MAX_STALENESS_S": "3600"})
    elapsed = time.monotonic() - started
    state = readyz(restarted)
    assert state["ready"] and state["loaded_from_disk"] and state["data_version"] == last
    assert state["seconds_since_origin_contact"] >= 0 and elapsed < 15
    assert _price_of(served(restarted, request), f"GB-{catalog_skus[0]}") == 0.77
    metrics = http_call(restarted.url, "GET", "/metrics")[2].decode()
    assert "edgerec_sync_staleness_seconds" in metrics and "edgerec_sync_versions_behind" in metrics


def test_an_edge_past_its_staleness_limit_is_not_ready_but_keeps_answering(seeded, catalog_skus):
    edge = seeded.start_edge("GB", env={"EDGEREC_MAX_STALENESS_S": "1"})
    seeded.origin.kill()
    wait_until(lambda: http_call(edge.url, "GET", "/readyz")[0] == 503, what="stale")
    assert readyz(edge)["stale"] is True
    assert served(edge, {"recent_items": []})["offers"]
    seeded.origin.start()
    edge.wait_ready("/readyz", timeout_s=20)


def test_an_edge_killed_while_persisting_restarts_on_a_whole_version(seeded, catalog_skus):
    edge = seeded.start_edge("GB")
    versions: dict[int, float] = {}
    stop = threading.Event()

    def write_changes() -> None:
        i = 0
        while not stop.is_set():
            i += 1
            price = 100.0 + i
            versions[
                seeded.put_offer(make_offer(f"GB-{catalog_skus[0]}", catalog_skus[0], price=price))["data_version"]
            ] = price

    writer = threading.Thread(target=write_changes)
    writer.start()
    try:
        time.sleep(1.5)  # a stream of changes, each followed by a write of the replica file
        os.kill(edge.process.pid, signal.SIGKILL)
        edge.process.wait()
    finally:
        stop.set()
        writer.join()
    seeded.origin.kill()
    restarted = seeded.start_edge("GB", port=edge.port)
    state = readyz(restarted)
    assert state["loaded_from_disk"], state
    answer = served(restarted, {"recent_items": catalog_skus[:5], "k": 30})
    version = answer["data_version"]
    assert version in versions or version < min(versions)
    if version in versions:
        assert _price_of(answer, f"GB-{catalog_skus[0]}") == versions[version]
    seeded.origin.start()
    seeded.origin.wait_ready("/healthz")
    head = max(versions)
    wait_until(lambda: readyz(restarted)["data_version"] == head, what="catch-up after the restart")


def _tmpfs(path: Path, size_kb: int) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(path)], capture_output=True)
    return result.returncode == 0


def test_a_full_or_unwritable_state_directory_does_not_stop_serving(seeded, catalog_skus, tmp_path):
    data_dir = tmp_path / "small-disk"
    # Room for the replica's copy (about 75 KB) and a sync's files in flight beside it; the filler below takes the
    # rest to the last byte (at 512 KB a loaded CI machine once found the disk full before the filler opened).
    if not _tmpfs(data_dir, 2048):
        missing_part("mounting a small tmpfs (the full disk) and remounting it read-only both need root")
    try:
        # The replica's copy alone on the small disk: a file open for writing there (the profile store, the event
        # spool) would make the read-only remount below busy.
        edge = seeded.start_edge(
            "GB",
            args=["--data-dir", str(data_dir), "--profile-dir", str(tmp_path / "profiles")],
            env={"EDGEREC_EVENTS": "off"},
        )
        request = {"recent_items": catalog_skus[:5], "k": 30}
        filler = data_dir / "filler"
        with open(filler, "wb") as f:  # fill the disk to the last byte
            try:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            except OSError:
                pass
        changed = seeded.put_offer(make_offer(f"GB-{catalog_skus[0]}", catalog_skus[0], price=0.33))
        answer = wait_until(
            lambda: (a := served(edge, request))["data_version"] == changed["data_version"] and a,
            what="serving the change from memory",
        )
        assert _price_of(answer, f"GB-{catalog_skus[0]}") == 0.33
        wait_until(lambda: readyz(edge)["persist_failures"] >= 1, what="a counted write failure")
        assert "edgerec_sync_persist_failures_total" in http_call(edge.url, "GET", "/metrics")[2].decode()
        assert "could not persist" in edge.log_path.read_text()
        filler.unlink()  # the fault ends: the next retry persists
        wait_until(
            lambda: readyz(edge)["persisted_version"] == changed["data_version"],
            timeout_s=20,
            what="persisted after space came back",
        )

        # Unwritable: the directory is replaced by a read-only bind of itself.
        subprocess.run(["mount", "-o", "remount,ro", str(data_dir)], check=True)
        again = seeded.put_offer(make_offer(f"GB-{catalog_skus[0]}", catalog_skus[0], price=0.34))
        wait_until(lambda: served(edge, request)["data_version"] == again["data_version"], what="serving, read-only")
        failures = readyz(edge)["persist_failures"]
        wait_until(lambda: readyz(edge)["persist_failures"] > failures, what="another counted failure")
        subprocess.run(["mount", "-o", "remount,rw", str(data_dir)], check=True)
        wait_until(
            lambda: readyz(edge)["persisted_version"] == again["data_version"],
            timeout_s=20,
            what="persisted once writable",
        )
    finally:
        for e in seeded.edges:
            e.stop()
        subprocess.run(["umount", "-l", str(data_dir)], capture_output=True)
        shutil.rmtree(data_dir, ignore_errors=True)
