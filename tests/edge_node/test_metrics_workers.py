"""With --workers N, /metrics shows every worker's counters (prometheus-client's multiprocess mode), not the one
worker that happens to answer the scrape."""

from __future__ import annotations

import re

from edgerec.cli.process import http_call, http_json
from tests.conftest import wait_until


def _sample(text: str, name: str, labels: str = "") -> float:
    pattern = re.escape(name) + (re.escape("{" + labels + "}") if labels else r"(\{[^}]*\})?") + r" ([0-9.e+-]+)"
    return sum(float(m.group(m.lastindex)) for m in re.finditer(r"^" + pattern + r"$", text, re.M))


def test_metrics_of_a_two_worker_edge_count_every_worker(seeded, catalog_skus):
    edge = seeded.start_edge("GB", args=["--workers", "2", "--profile-store", "off"])
    answered = 60
    for _ in range(answered):  # a new connection each: the kernel spreads them over both workers
        status, _ = http_json(edge.url, "POST", "/v1/recommendations", {"recent_items": catalog_skus[:3]})
        assert status == 200

    def scrape() -> str:
        return http_call(edge.url, "GET", "/metrics")[2].decode()

    # A worker observes an answer's latency just after sending it: wait for the last one, then every scrape,
    # whichever worker answers it, counts all the answers of both workers.
    wait_until(
        lambda: (
            _sample(scrape(), "edgerec_request_duration_seconds_count", 'method="POST",route="/v1/recommendations"')
            == answered
        ),
        what="the last observation",
    )
    for _ in range(6):
        text = scrape()
        assert (
            _sample(text, "edgerec_requests_total", 'method="POST",route="/v1/recommendations",status="200"')
            == answered
        ), text[:2000]
        assert (
            _sample(text, "edgerec_request_duration_seconds_count", 'method="POST",route="/v1/recommendations"')
            == answered
        )
    # Each worker applied its own first version (a snapshot, or the copy on disk); the shared files say so once
    # both have published.
    wait_until(lambda: _sample(scrape(), "edgerec_sync_applied_total") >= 2, what="both workers' sync figures")
    text = scrape()
    assert _sample(text, "edgerec_data_version") == seeded_version(seeded)
    assert _sample(text, "edgerec_events_recorded_total") == answered  # one impression per answer, both workers


def seeded_version(cluster) -> float:
    status, body = http_json(
        cluster.origin.url, "GET", "/v1/admin/status", None, {"Authorization": f"Bearer {cluster.admin_token}"}
    )
    assert status == 200
    return float(body["data_version"])
