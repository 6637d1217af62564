"""TLS on the edge-origin hop with real processes: an HTTPS origin, edges verifying it against a CA bundle, mutual
TLS whose certificate must agree with the region token, and a certificate renewed on disk without a restart."""

from __future__ import annotations

import json

import pytest

from edgerec.cli.process import http_call
from origin_sync.wire.protocol import PROTOCOL_HEADER, PROTOCOL_VERSION
from tests.conftest import (
    Cluster,
    edge_tls_env,
    first_certificate_der,
    https_cluster,
    make_offer,
    renew_in_place,
    served_certificate,
    sync_error_count,
    wait_until,
)


def seed(cluster: Cluster, catalog_skus: list[str]) -> None:
    cluster.publish()
    for sku in catalog_skus[:5]:
        cluster.put_offer(make_offer(f"GB-{sku}", sku))


def sync_headers(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", PROTOCOL_HEADER: str(PROTOCOL_VERSION)}


def test_an_edge_syncs_over_https_verifying_the_origin_against_its_ca_bundle(tmp_path, bundle_dir, pki, catalog_skus):
    cluster = https_cluster(tmp_path, bundle_dir, pki)
    try:
        assert cluster.origin.url.startswith("https://")
        seed(cluster, catalog_skus)
        edge = cluster.start_edge("GB", env=edge_tls_env(pki))
        status, _, body = http_call(
            edge.url, "POST", "/v1/recommendations", json.dumps({"k": 5}).encode(), {"Content-Type": "application/json"}
        )
        assert status == 200 and len(json.loads(body)["offers"]) == 5
        # Plain HTTP to the HTTPS port gets no answer from the origin.
        with pytest.raises(OSError):
            http_call(cluster.origin.url.replace("https://", "http://"), "GET", "/healthz", timeout=3)
    finally:
        cluster.stop()


def test_an_edge_with_the_wrong_ca_refuses_the_origin_counts_it_and_keeps_running(
    tmp_path, bundle_dir, pki, catalog_skus
):
    import trustme

    cluster = https_cluster(tmp_path, bundle_dir, pki)
    try:
        seed(cluster, catalog_skus)
        other_ca = pki.write_ca(trustme.CA(), "other-ca.pem")
        edge = cluster.start_edge("GB", ready=False, env=edge_tls_env(pki, ca_file=other_ca))
        edge.wait_ready("/healthz")
        wait_until(lambda: sync_error_count(edge) >= 2, what="failed sync attempts counted")
        status, _, body = http_call(edge.url, "GET", "/readyz")
        assert status == 503
        assert "certificate" in json.loads(body)["last_sync_error"].lower()
        assert edge.process.poll() is None
    finally:
        cluster.stop()


def test_mutual_tls_requires_a_certificate_that_names_the_tokens_region(tmp_path, bundle_dir, pki, catalog_skus):
    admin_cert = pki.issue("operator", "ops.example", common_name="ops.example")
    cluster = https_cluster(
        tmp_path, bundle_dir, pki, "--client-ca", str(pki.ca_file), "--require-client-cert", admin_cert=admin_cert
    )
    try:
        seed(cluster, catalog_skus)
        gb_token = cluster.region_tokens["GB"]
        # The right pair syncs.
        edge = cluster.start_edge("GB", env=edge_tls_env(pki, cert=pki.edge_cert("GB")))
        assert http_call(edge.url, "GET", "/readyz")[0] == 200
        # A certificate for DE with the GB token: 403 with a JSON error.

        def gb_snapshot_with_certificate_for(region: str):
            return http_call(
                cluster.origin.url,
                "GET",
                "/v1/sync/snapshot?regions=GB",
                None,
                sync_headers(gb_token),
                ssl_context=pki.client_context(pki.edge_cert(region)),
            )

        status, _, body = gb_snapshot_with_certificate_for("DE")
        assert status == 403
        error = json.loads(body)["error"]
        assert error["code"] == "certificate_mismatch" and "DE" in error["message"]
        assert gb_token not in body.decode()
        # The same token with its own region's certificate is served.
        status, _, _ = gb_snapshot_with_certificate_for("GB")
        assert status == 200
        # No certificate at all: the handshake is refused, the token never reaches the origin's handlers.
        with pytest.raises(OSError):
            http_call(
                cluster.origin.url,
                "GET",
                "/v1/sync/snapshot?regions=GB",
                None,
                sync_headers(gb_token),
                ssl_context=pki.client_context(),
                timeout=5,
            )
        # An edge presenting the DE certificate with the GB token is refused, and says why (in the same data
        # directory, so the first edge stops first; the copy it persisted keeps the second one serving).
        edge.stop()
        mismatched = cluster.start_edge("GB", ready=False, env=edge_tls_env(pki, cert=pki.edge_cert("DE")))
        mismatched.wait_ready("/healthz")
        wait_until(
            lambda: (
                "certificate_mismatch"
                in (json.loads(http_call(mismatched.url, "GET", "/readyz")[2]).get("last_sync_error") or "")
            ),
            what="the mismatch reported by the edge",
        )
    finally:
        cluster.stop()


def test_a_certificate_replaced_on_disk_is_served_to_new_connections_without_a_restart(tmp_path, bundle_dir, pki):
    cluster = https_cluster(tmp_path, bundle_dir, pki, "--tls-reload-interval", "0.2")
    try:
        context = pki.client_context()
        before = served_certificate(cluster.origin.port, context)
        renewed = pki.issue("origin-renewed", "127.0.0.1", "localhost")
        renew_in_place(renewed, (pki.origin_cert, pki.origin_key))
        expected = first_certificate_der(renewed[0])
        assert expected != before
        wait_until(
            lambda: served_certificate(cluster.origin.port, context) == expected,
            timeout_s=15,
            what="the renewed certificate on a new connection",
        )
        assert cluster.origin.process.poll() is None  # the same process, never restarted
        assert http_call(cluster.origin.url, "GET", "/healthz", ssl_context=context)[0] == 200
    finally:
        cluster.stop()
