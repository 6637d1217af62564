"""SIGTERM drains a real origin: `/readyz` answers 503 draining at once while admin calls and an edge's sync are
still served for the drain window, then the origin stops and exits 0 within EDGEREC_SHUTDOWN_TIMEOUT_S."""

from __future__ import annotations

import json
import time

from edgerec.cli.process import http_call
from edgerec.cli.services import Cluster
from tests.conftest import make_offer, wait_until

DRAIN_S = 1.5
SHUTDOWN_TIMEOUT_S = 8.0


def test_sigterm_makes_the_origin_unready_keeps_serving_for_the_window_and_exits_0(tmp_path, bundle_dir, catalog_skus):
    cluster = Cluster(
        tmp_path,
        bundle_dir,
        origin_env={"EDGEREC_DRAIN_S": str(DRAIN_S), "EDGEREC_SHUTDOWN_TIMEOUT_S": str(SHUTDOWN_TIMEOUT_S)},
    )
    cluster.start_origin()
    try:
        cluster.publish()
        cluster.put_offer(make_offer(f"GB-{catalog_skus[0]}", catalog_skus[0]))
        edge = cluster.start_edge("GB")  # holds a long-poll open at the origin from now on
        assert http_call(cluster.origin.url, "GET", "/readyz")[0] == 200

        sigterm = time.monotonic()
        cluster.origin.terminate()
        wait_until(lambda: http_call(cluster.origin.url, "GET", "/readyz", timeout=2)[0] == 503, 1.0, "503", 0.01)
        unready_after = time.monotonic() - sigterm
        status, _, raw = http_call(cluster.origin.url, "GET", "/readyz", timeout=2)
        assert status == 503 and json.loads(raw)["draining"] is True and json.loads(raw)["reason"] == "draining"
        # Still serving: an admin write is taken, and the edge's long-poll brings it to the edge.
        version = cluster.put_offer(make_offer(f"GB-{catalog_skus[1]}", catalog_skus[1]))["data_version"]
        cluster.wait_for_version(version, timeout_s=DRAIN_S)
        served_by = time.monotonic() - sigterm

        rc = cluster.origin.process.wait(SHUTDOWN_TIMEOUT_S + 5)
        exited_after = time.monotonic() - sigterm
        assert unready_after < 0.5, unready_after
        assert served_by < DRAIN_S, served_by
        assert rc == 0 and DRAIN_S <= exited_after < SHUTDOWN_TIMEOUT_S, (rc, exited_after, cluster.origin.log_tail())
        assert http_call(edge.url, "GET", "/readyz")[0] == 200  # the edge serves on without its origin
    finally:
        cluster.stop()
