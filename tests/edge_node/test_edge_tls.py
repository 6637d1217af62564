"""The edge's own network behaviour with real processes: its shopper listener serving HTTPS, and no outbound
connection but to its origin (no telemetry, no surprise traffic)."""

from __future__ import annotations

import json
import ssl
import time

import psutil
import pytest

from edgerec.cli.process import http_call, http_json
from tests.conftest import (
    first_certificate_der,
    renew_in_place,
    served_certificate,
    wait_until,
)

# One origin with the model and 10 GB offers for the module (tests/conftest.py's module_seeded): each test starts
# an edge of its own against it, and none writes to it.
SEEDED_OFFERS = {"gb": 10}


def test_the_edge_listener_answers_https_with_its_configured_certificate(module_seeded, pki, catalog_skus):
    cert, key = pki.issue("edge-listener", "127.0.0.1", "localhost")
    edge = module_seeded.start_edge("GB", ready=False, args=["--tls-cert", str(cert), "--tls-key", str(key)])
    edge.scheme, edge.tls = "https", pki.client_context()
    edge.wait_ready("/readyz")
    status, answer = http_json(edge.url, "POST", "/v1/recommendations", {"k": 3}, ssl_context=edge.tls)
    assert status == 200 and len(answer["offers"]) == 3
    # A client that does not trust the listener's CA refuses it: the certificate served is the configured one.
    with pytest.raises(ssl.SSLCertVerificationError):
        http_call(edge.url, "GET", "/healthz", ssl_context=ssl.create_default_context(), timeout=5)


def test_an_edge_opens_no_connection_but_to_its_origin(module_seeded, catalog_skus):
    edge = module_seeded.start_edge("GB")
    process = psutil.Process(edge.process.pid)
    seen: set[tuple[str, int, str, int]] = set()
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:
        # Traffic of every kind the edge serves (answers record impressions, shipped to the origin), then a look.
        assert (
            http_json(
                edge.url, "POST", "/v1/recommendations", {"shopper_id": "s-1", "k": 3, "recent_items": catalog_skus[:3]}
            )[0]
            == 200
        )
        assert http_call(edge.url, "GET", "/v1/recommendations?region=GB&k=3")[0] == 200
        for connection in process.net_connections(kind="inet"):
            if connection.raddr:
                seen.add((connection.laddr.ip, connection.laddr.port, connection.raddr.ip, connection.raddr.port))
        time.sleep(0.1)
    wait_until(
        lambda: json.loads(http_call(edge.url, "GET", "/readyz")[2])["data_version"] >= 11, what="the edge in sync"
    )
    to_origin = {c for c in seen if c[3] == module_seeded.origin.port}
    inbound = {c for c in seen if c[1] == edge.port}
    assert to_origin, "the edge never held a connection to its origin (long-poll), so the check saw nothing"
    assert seen == to_origin | inbound, f"unexpected connections: {sorted(seen - to_origin - inbound)}"
    assert all(c[2] in ("127.0.0.1", "::1", "::ffff:127.0.0.1") for c in seen)


@pytest.mark.parametrize("workers", [1, 2])
def test_a_listener_certificate_renewed_on_disk_is_served_to_new_connections_without_a_restart(
    module_seeded, pki, catalog_skus, workers
):
    """Every worker process watches the files: new connections, whichever worker takes them, get the renewal."""
    live = pki.issue("edge-listener", "127.0.0.1", "localhost")
    edge = module_seeded.start_edge(
        "GB",
        ready=False,
        args=[
            "--tls-cert",
            str(live[0]),
            "--tls-key",
            str(live[1]),
            "--tls-reload-interval",
            "0.2",
            "--workers",
            str(workers),
            "--profile-store",
            "embedded" if workers == 1 else "off",
        ],
    )
    edge.scheme, edge.tls = "https", pki.client_context()
    edge.wait_ready("/readyz")
    assert served_certificate(edge.port, edge.tls) == first_certificate_der(live[0])
    renewed = pki.issue("edge-listener-renewed", "127.0.0.1", "localhost")
    renew_in_place(renewed, live)
    expected = first_certificate_der(renewed[0])
    wait_until(
        lambda: all(served_certificate(edge.port, edge.tls) == expected for _ in range(20)),
        timeout_s=15,
        what="the renewed certificate on new connections",
    )
    assert edge.process.poll() is None  # the same process, never restarted
    status, answer = http_json(edge.url, "POST", "/v1/recommendations", {"k": 3}, ssl_context=edge.tls)
    assert status == 200 and len(answer["offers"]) == 3
