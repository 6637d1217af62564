"""Rotation without downtime, on a real origin and real edges under load: the signing key (announce, activate,
revoke the old one), a region token and an admin token rotate while offers are written at the origin and
recommendations read at the edge, with no failed request, no refused valid delta and no origin restart."""

from __future__ import annotations

import http.client
import json
import os
import threading
import time
from pathlib import Path
from typing import Callable

from edgerec.cli.process import Service, http_call, http_json
from origin_sync.wire.signing import generate_key_pair, key_id_of, load_private_key
from tests.conftest import Cluster, make_offer, wait_until


def _write_json(path: Path, value: object) -> None:
    """Replace a token file whole (write, then rename), as a secrets agent would."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(value))
    os.replace(tmp, path)


class Traffic:
    """Offers written at the origin and recommendations read at an edge, each in its own thread, until stopped.
    Which edge is read and which admin token writes can be switched while it runs."""

    def __init__(self, origin_url: str, admin_token: str, edge: Service, skus: list[str]) -> None:
        self.origin_url, self.admin_token, self.edge, self.skus = origin_url, admin_token, edge, skus
        self.failures: list[str] = []
        self.reads = self.writes = 0
        self.last_written: dict | None = None
        self.stop = threading.Event()
        self.threads = [
            threading.Thread(target=self._write, daemon=True),
            threading.Thread(target=self._read, daemon=True),
        ]

    def __enter__(self) -> "Traffic":
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(15)

    def _write(self) -> None:
        n = 0
        while not self.stop.is_set():
            n += 1
            sku = self.skus[n % len(self.skus)]
            offer = make_offer(f"GB-{sku}", sku, price=round(1 + n / 100, 2))
            status, body = http_json(
                self.origin_url,
                "PUT",
                f"/v1/admin/offers/{offer['id']}",
                offer,
                {"Authorization": f"Bearer {self.admin_token}"},
            )
            if status == 200:
                self.writes += 1
                self.last_written = {"offer": offer, "data_version": body["data_version"]}
            else:
                self.failures.append(f"write: HTTP {status} {body}")
            time.sleep(0.05)

    def _read(self) -> None:
        body = json.dumps({"recent_items": self.skus[:5], "k": 5, "region": "GB"}).encode()
        port, conn = None, None
        while not self.stop.is_set():
            if self.edge.port != port:  # moved onto another edge: a new connection
                port = self.edge.port
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            try:
                conn.request("POST", "/v1/recommendations", body, {"Content-Type": "application/json"})
                resp = conn.getresponse()
                raw = resp.read()
            except OSError as exc:
                self.failures.append(f"read: {exc!r}")
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                continue
            if resp.status == 200:
                self.reads += 1
            else:
                self.failures.append(f"read: HTTP {resp.status} {raw[:200]!r}")
            time.sleep(0.01)


def _answers(cluster: Cluster, path: str, token: str, status: int) -> Callable[[], bool]:
    """Whether the origin answers a GET of `path` presenting this bearer token with `status` (for wait_until)."""
    return lambda: http_call(cluster.origin.url, "GET", path, headers={"Authorization": f"Bearer {token}"})[0] == status


def _readyz(edge: Service) -> dict:
    return json.loads(http_call(edge.url, "GET", "/readyz")[2])


def _caught_up(edge: Service, version: int) -> bool:
    return (_readyz(edge)["data_version"] or 0) >= version


def test_keys_and_tokens_rotate_under_load_with_no_failed_request(tmp_path, bundle_dir, catalog_skus):
    cluster = Cluster(tmp_path, bundle_dir)
    old_key = str(cluster.origin.env["EDGEREC_SIGNING_KEY"])
    new_key, new_public_key = generate_key_pair(tmp_path / "next-key")
    old_id = key_id_of(load_private_key(old_key).public_key())
    new_id = key_id_of(load_private_key(str(new_key)).public_key())
    region_file, admin_file = tmp_path / "region-tokens.json", tmp_path / "admin-tokens.json"
    gb_old, gb_new = "gb-token-old-0123456789abc", "gb-token-new-0123456789abc"
    writer_old, writer_new = "writer-token-old-0123456789", "writer-token-new-0123456789"
    scopes = ["catalog", "read"]
    _write_json(region_file, {"GB": [gb_old]})
    _write_json(admin_file, {"writer": {"token": writer_old, "scopes": scopes}})
    cluster.region_tokens = {"GB": gb_old}
    # Both private keys at the origin; the edges are configured with the old public key only.
    cluster.origin.env.update(
        {
            "EDGEREC_SIGNING_KEY": f"{old_key},{new_key}",
            "EDGEREC_REGION_TOKENS": str(region_file),
            "EDGEREC_ADMIN_TOKENS": str(admin_file),
        }
    )
    cluster.start_origin()
    origin_pid = cluster.origin.process.pid
    root = {"Authorization": f"Bearer {cluster.admin_token}"}  # EDGEREC_ADMIN_TOKEN: every scope
    try:
        cluster.publish()
        for sku in catalog_skus[:20]:
            cluster.put_offer(make_offer(f"GB-{sku}", sku))
        edge = cluster.start_edge("GB")
        traffic = Traffic(cluster.origin.url, writer_old, edge, catalog_skus[:20])
        with traffic:
            wait_until(lambda: traffic.reads > 20 and traffic.writes > 5, what="traffic")

            # (a) the signing key: announce, let every edge learn it, activate, then revoke the old key.
            for method, path, body in (
                ("POST", "/v1/admin/keys", {"key_id": new_id}),
                ("POST", f"/v1/admin/keys/{new_id}/activate", None),
                ("POST", f"/v1/admin/keys/{old_id}/revoke", None),
            ):
                status, answer = http_json(cluster.origin.url, method, path, body, root)
                assert status == 200, answer
                wait_until(lambda v=answer["data_version"]: _caught_up(edge, v), what=f"{path} at the edge")
            status, keys = http_json(cluster.origin.url, "GET", "/v1/admin/keys", None, root)
            assert keys["active"] == new_id
            assert {e["key_id"]: e["status"] for e in keys["published"]["keys"]} == {
                old_id: "revoked",
                new_id: "active",
            }
            # Still syncing after the revocation: the writer's changes keep arriving, signed by the new key.
            written = traffic.last_written["data_version"]
            wait_until(lambda: _caught_up(edge, written + 1), what="changes signed by the new key")

            # (b) a region token: add the new one, move the edge onto it, then remove the old one.
            _write_json(region_file, {"GB": [gb_new, gb_old]})
            wait_until(
                _answers(cluster, "/v1/sync/snapshot?regions=GB", gb_new, 200), what="the new region token accepted"
            )
            cluster.region_tokens = {"GB": gb_new}
            # A replacement edge on the new token, configured as edges are after the rotation (the new public
            # key), then the old edge leaves.
            moved = cluster.start_edge(
                "GB",
                args=["--data-dir", str(tmp_path / "edge-GB-moved")],
                env={"EDGEREC_ORIGIN_PUBLIC_KEY": str(new_public_key)},
            )
            reads_before = traffic.reads
            traffic.edge = moved
            wait_until(lambda: traffic.reads > reads_before + 20, what="reads at the replacement edge")
            first_edge_rejected = _readyz(edge)["rejected_payloads"]
            edge.stop()
            _write_json(region_file, {"GB": [gb_new]})
            wait_until(
                _answers(cluster, "/v1/sync/snapshot?regions=GB", gb_old, 401), what="the old region token refused"
            )

            # (c) an admin token: add the new one, move the writer onto it, then remove the old one.
            _write_json(admin_file, {"writer": {"token": [writer_new, writer_old], "scopes": scopes}})
            wait_until(_answers(cluster, "/v1/admin/status", writer_new, 200), what="the new admin token accepted")
            traffic.admin_token = writer_new
            time.sleep(0.3)
            _write_json(admin_file, {"writer": {"token": writer_new, "scopes": scopes}})
            wait_until(_answers(cluster, "/v1/admin/status", writer_old, 401), what="the old admin token refused")
            reads_before = traffic.reads
            wait_until(lambda: traffic.reads > reads_before + 20, what="more reads after the rotations")
        last = traffic.last_written
        wait_until(lambda: _caught_up(moved, last["data_version"]), what="the last write at the edge")
        status, answer = http_json(
            moved.url, "POST", "/v1/recommendations", {"region": "GB", "k": 100, "recent_items": catalog_skus[:5]}
        )
        served = {o["offer_id"]: o["price"] for o in answer["offers"]}
        assert served.get(last["offer"]["id"]) == last["offer"]["price"]
        moved_rejected = _readyz(moved)["rejected_payloads"]
    finally:
        cluster.stop()
    assert traffic.failures == []
    assert traffic.reads > 100 and traffic.writes > 20
    assert first_edge_rejected == {} and moved_rejected == {}  # edgerec_sync_rejected_total stayed at zero
    assert cluster.origin.process.pid == origin_pid  # no origin restart
    log = cluster.origin.log_path.read_text()
    assert "credentials reloaded" in log
    assert not any(secret in log for secret in (gb_old, gb_new, writer_old, writer_new))
