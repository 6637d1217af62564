"""Access logs (EDGEREC_ACCESS_LOG) on real edge and origin processes: off writes nothing, on writes one valid JSON
line per request without the shopper id even when the request carries it, and a sample logs about its share."""

from __future__ import annotations

import json
import random
import time

import pytest

from edgerec.cli.process import http_call, http_json
from edgerec.core.access import AccessLog, parse_access_log, query_names
from tests.conftest import stocked_origin

SHOPPER = "shopper-7f3a91c2-secret"
FIELDS = {"ts", "level", "logger", "msg", "method", "path", "query", "status", "duration_ms", "bytes", "request_id"}


def access_lines(service) -> list[dict]:
    lines = []
    for line in service.log_path.read_text(errors="replace").splitlines():
        if '"edgerec.access"' in line:
            lines.append(json.loads(line))  # each one valid JSON on its own
    return lines


def wait_for_lines(service, count: int, path: str | None = None, timeout_s: float = 5.0) -> list[dict]:
    """The access lines (of `path`, else all) once there are `count` (a line is written after its answer left)."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = [line for line in access_lines(service) if path is None or line["path"] == path]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def ask(edge, shopper: str = SHOPPER) -> None:
    body = {"shopper_id": shopper, "region": "GB", "k": 3}
    status, answer = http_json(edge.url, "POST", "/v1/recommendations", body, timeout=5)
    assert status == 200, answer
    # The anonymous form, refused (422) for the identifying value in its query string; logged, never that value.
    status, _, _ = http_call(edge.url, "GET", f"/v1/recommendations?region=GB&k=2&shopper_id={shopper}", timeout=5)
    assert status == 422


@pytest.fixture(scope="module")
def logged_cluster(tmp_path_factory, bundle_dir, catalog_skus):
    with stocked_origin(
        tmp_path_factory.mktemp("access-log"), bundle_dir, catalog_skus[:10], {"EDGEREC_ACCESS_LOG": "on"}
    ) as cluster:
        yield cluster


def test_the_setting_reads_off_on_and_a_sample_share_and_refuses_anything_else() -> None:
    assert (parse_access_log("off"), parse_access_log("ON"), parse_access_log("sample:0.01")) == (0.0, 1.0, 0.01)
    for wrong in ("yes", "sample:", "sample:2", "sample:-0.1", "sample:x", "0.5"):
        with pytest.raises(ValueError, match="off, on or sample:R"):
            parse_access_log(wrong)


def test_a_query_string_counts_by_its_parameter_names_only() -> None:
    assert query_names(b"region=GB&shopper_id=s-123&k=2&k=3") == ["k", "region", "shopper_id"]
    assert query_names("") == []


def test_a_sample_logs_about_its_share_of_requests() -> None:
    log = AccessLog(0.1)
    log._random = random.Random(7).random
    assert 900 <= sum(log.sampled() for _ in range(10_000)) <= 1100
    assert all(AccessLog(1.0).sampled() for _ in range(100))
    assert not any(AccessLog(0.0).sampled() for _ in range(100))


def test_with_the_access_log_off_an_edge_writes_no_access_line(logged_cluster) -> None:
    edge = logged_cluster.start_edge("GB")  # EDGEREC_ACCESS_LOG unset: off
    for _ in range(5):
        ask(edge)
    time.sleep(0.3)
    assert access_lines(edge) == []
    assert SHOPPER not in edge.log_path.read_text(errors="replace")


def test_with_it_on_an_edge_writes_one_json_line_per_request_without_the_shopper_id(logged_cluster) -> None:
    edge = logged_cluster.start_edge("GB", env={"EDGEREC_ACCESS_LOG": "on"})
    ask(edge)
    lines = wait_for_lines(edge, 2, "/v1/recommendations")
    assert [(line["method"], line["path"], line["status"]) for line in lines] == [
        ("POST", "/v1/recommendations", 200),
        ("GET", "/v1/recommendations", 422),
    ]
    for line in lines:
        assert set(line) == FIELDS and line["logger"] == "edgerec.access"
        assert line["duration_ms"] > 0 and line["bytes"] > 0 and len(line["request_id"]) == 16
    assert lines[1]["query"] == ["k", "region", "shopper_id"]
    assert SHOPPER not in edge.log_path.read_text(errors="replace")


def test_a_sampled_edge_logs_part_of_its_requests(logged_cluster) -> None:
    edge = logged_cluster.start_edge("GB", env={"EDGEREC_ACCESS_LOG": "sample:0.5"})
    for _ in range(50):
        ask(edge)  # 100 requests
    time.sleep(0.5)
    logged = wait_for_lines(edge, 0, "/v1/recommendations")
    assert 25 <= len(logged) <= 75, len(logged)  # binomial(100, 0.5): outside this once in ~10^6 runs


def test_the_origin_logs_its_calls_with_a_request_id_and_no_pseudonym(logged_cluster) -> None:
    origin = logged_cluster.origin
    pseudonym = "0123456789abcdef0123456789abcdef"
    status, headers, body = http_call(
        origin.url,
        "POST",
        "/v1/admin/events/erase",
        json.dumps({"shopper": pseudonym}).encode(),
        headers={"Authorization": f"Bearer {logged_cluster.admin_token}", "Content-Type": "application/json"},
        timeout=5,
    )
    assert status == 200
    erase = wait_for_lines(origin, 1, "/v1/admin/events/erase")
    assert len(erase) == 1 and set(erase[0]) == FIELDS and erase[0]["status"] == 200
    assert json.loads(body)["erased"] == 0 and erase[0]["bytes"] == len(body)
    assert erase[0]["request_id"] == headers["x-request-id"]
    assert pseudonym not in origin.log_path.read_text(errors="replace")
