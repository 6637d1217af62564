"""Input the edge must refuse (issue 21): numbers out of their documented range, a body declared too large, requests
that are not HTTP/1.x; each answered with a JSON error at once, and every line the edge logs stays JSON."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time

import pytest

from edge_node.openapi import build_openapi
from edge_node.validation import (
    MAX_AGE_DAYS,
    MAX_EPOCH_S,
    RequestError,
    parse_anonymous_query,
    parse_recommendation_request,
)
from edgerec.cli.process import http_call
from tests.conftest import REPO, make_offer

MAX_K = 100


def refused(body: dict) -> RequestError:
    with pytest.raises(RequestError) as caught:
        parse_recommendation_request(json.dumps(body).encode(), MAX_K, 10)
    return caught.value


@pytest.mark.parametrize(
    "body, field",
    [
        ({"recent_items": [{"item": "A", "age_days": 1e308}]}, "recent_items[0].age_days"),
        ({"recent_items": ["B", {"item": "A", "age_days": MAX_AGE_DAYS + 0.001}]}, "recent_items[1].age_days"),
        ({"recent_items": [{"item": "A", "age_days": -1}]}, "recent_items[0].age_days"),
        ({"recent_items": [{"item": "A", "age_days": True}]}, "recent_items[0].age_days"),
        ({"recent_items": [{"item": "A", "age_days": "3"}]}, "recent_items[0].age_days"),
        ({"context": {"time": 1e300}}, "context.time"),
        ({"context": {"time": -1}}, "context.time"),
        ({"context": {"time": MAX_EPOCH_S + 1}}, "context.time"),
        ({"context": {"time": 1.7e12}}, "context.time"),  # epoch milliseconds, not seconds
        ({"context": {"time": True}}, "context.time"),
        ({"k": 0}, "k"),
        ({"k": MAX_K + 1}, "k"),
        ({"k": 1e300}, "k"),
        ({"k": 5.0}, "k"),
        ({"k": True}, "k"),
    ],
)
def test_every_number_of_a_request_is_bounded_and_the_error_names_its_field(body, field):
    error = refused(body)
    assert (error.status, error.code) == (422, "invalid_request")
    assert error.message.startswith(f"{field}: "), error.message


def test_the_ends_of_every_range_are_accepted():
    request = parse_recommendation_request(
        json.dumps(
            {
                "k": MAX_K,
                "context": {"time": MAX_EPOCH_S},
                "recent_items": [{"item": "a", "age_days": 0}, {"item": "b", "age_days": MAX_AGE_DAYS}, "c"],
            }
        ).encode(),
        MAX_K,
        10,
    )
    assert request.k == MAX_K and request.at == MAX_EPOCH_S
    assert request.recent_ages_days[:2] == (0.0, float(MAX_AGE_DAYS))
    assert parse_recommendation_request(b'{"k": 1, "context": {"time": 0}}', MAX_K, 10).at == 0.0


@pytest.mark.parametrize("k", ["\u00b2", "\u0663", "0", "101", "1e3", "-1", ""])
def test_the_anonymous_k_is_an_ascii_integer_in_range(k):
    # "²" and "٣" pass str.isdigit() and then failed int(): a 500 before.
    with pytest.raises(RequestError) as caught:
        parse_anonymous_query({"k": [k]}, MAX_K, 10)
    assert (caught.value.status, caught.value.message.split(":")[0]) == (422, "k")


def test_the_openapi_document_states_the_ranges():
    request = build_openapi(MAX_K, 10, 20)["components"]["schemas"]["RecommendationRequest"]["properties"]
    age = request["recent_items"]["items"]["oneOf"][1]["properties"]["age_days"]
    assert (age["minimum"], age["maximum"]) == (0, MAX_AGE_DAYS)
    epoch = request["context"]["properties"]["time"]["oneOf"][1]
    assert (epoch["minimum"], epoch["maximum"]) == (0, MAX_EPOCH_S)
    assert (request["k"]["minimum"], request["k"]["maximum"]) == (1, MAX_K)


# ------------------------------------------------------------------ a real edge


@pytest.fixture(scope="module")
def edge(module_cluster, catalog_skus):
    module_cluster.publish()
    for sku in catalog_skus[:10]:
        module_cluster.put_offer(make_offer(f"GB-{sku}", sku))
    return module_cluster.start_edge("GB")


def exchange(port: int, data: bytes, body_bytes: int = 0, timeout: float = 5.0) -> tuple[float, bytes, bool]:
    """Send `data` (then `body_bytes` of body, from another thread, as a client uploading would); read until the
    edge closes. (seconds from the send to the whole answer, the answer, whether the edge closed cleanly)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sender = threading.Thread(target=lambda: _send(sock, b"x" * body_bytes)) if body_bytes else None
        started = time.monotonic()
        sock.sendall(data)
        if sender is not None:
            sender.start()
        answer, clean = b"", True
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                clean = False
                break
            if not chunk:
                break
            answer += chunk
        waited = time.monotonic() - started
        if sender is not None:
            sender.join()
        return waited, answer, clean


def _send(sock: socket.socket, data: bytes) -> None:
    try:
        sock.sendall(data)
    except OSError:  # the edge stopped reading: the test then sees no clean close
        pass


def json_error(answer: bytes, status: int) -> dict:
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.lower().split(b"\r\n")
    assert lines[0].startswith(b"http/1.1 %d " % status), head
    assert b"content-type: application/json" in lines and b"connection: close" in lines, head
    return json.loads(body)["error"]


def cut_counts(edge) -> dict[str, float]:
    metrics = http_call(edge.url, "GET", "/metrics")[2].decode()
    return {
        line.split('"')[1]: float(line.split()[-1])
        for line in metrics.splitlines()
        if line.startswith("edgerec_connections_cut_total{")
    }


def test_out_of_range_numbers_get_a_422_that_names_the_field(edge, catalog_skus):
    for body, field in (
        (
            b'{"recent_items": [{"item": "%s", "age_days": 1e308}]}' % catalog_skus[0].encode(),
            "recent_items[0].age_days",
        ),
        (b'{"context": {"time": 1e300}}', "context.time"),
    ):
        status, headers, raw = http_call(
            edge.url, "POST", "/v1/recommendations", body, {"Content-Type": "application/json"}
        )
        assert status == 422 and headers["content-type"] == "application/json", raw
        error = json.loads(raw)["error"]
        assert error["code"] == "invalid_request" and error["message"].startswith(field + ":"), error
    status, _, raw = http_call(edge.url, "GET", "/v1/recommendations?k=%C2%B2")
    assert status == 422 and json.loads(raw)["error"]["message"].startswith("k:")


@pytest.mark.parametrize("path", [b"/v1/recommendations", b"/v1/events"])
def test_a_body_declared_too_large_is_refused_as_soon_as_the_headers_are_read(edge, path):
    before = cut_counts(edge).get("body_too_large", 0)
    head = b"POST " + path + b" HTTP/1.1\r\nHost: edge\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
    # Headers alone: the 413 and the close come at once, not after the 5 s body timeout.
    waited, answer, clean = exchange(edge.port, head % 999_999_999)
    assert waited < 1, waited
    assert json_error(answer, 413) == {"code": "body_too_large", "message": "request body over 65536 bytes"}
    assert clean
    # Nor is a client that waits for `100 Continue` told to go on.
    waited, answer, clean = exchange(
        edge.port, head.replace(b"\r\n\r\n", b"\r\nExpect: 100-continue\r\n\r\n") % 999_999_999
    )
    assert waited < 1 and json_error(answer, 413)["code"] == "body_too_large" and clean
    # A client already uploading its 3 MB still reads the 413 (the edge reads out what is in flight, no reset).
    waited, answer, clean = exchange(edge.port, head % 3_000_000, body_bytes=3_000_000)
    assert waited < 3 and json_error(answer, 413)["code"] == "body_too_large" and clean
    assert cut_counts(edge)["body_too_large"] == before + 3


def test_an_answer_given_before_the_body_arrived_ends_the_connection(edge):
    # A chunked body (no length to refuse at the headers) over the bound: the app's 413, then the connection ends
    # at once instead of waiting for the rest of a body nothing reads.
    chunk = b"x" * 70_000
    waited, answer, clean = exchange(
        edge.port,
        b"POST /v1/recommendations HTTP/1.1\r\nHost: edge\r\n"
        b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"%x\r\n%s\r\n" % (len(chunk), chunk),
    )
    assert waited < 1 and clean and answer.startswith(b"HTTP/1.1 413 ")
    assert json.loads(answer.partition(b"\r\n\r\n")[2])["error"]["code"] == "body_too_large"
    # An early error (415) to a request whose body is still to come: the same.
    waited, answer, clean = exchange(
        edge.port,
        b"POST /v1/recommendations HTTP/1.1\r\nHost: edge\r\nContent-Type: text/xml\r\nContent-Length: 500\r\n\r\n<a/>",
    )
    assert waited < 1 and clean and answer.startswith(b"HTTP/1.1 415 ")
    # Whole requests are still kept alive (and pipelined).
    body = b'{"recent_items": []}'
    request = (
        b"POST /v1/recommendations HTTP/1.1\r\nHost: edge\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    with socket.create_connection(("127.0.0.1", edge.port), timeout=5) as sock:
        sock.sendall(request * 2)
        answers = b""
        while answers.count(b"HTTP/1.1 200 ") < 2:
            answers += sock.recv(65536)
        sock.sendall(request)
        assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")


@pytest.mark.parametrize(
    "request_bytes, status, code, mention",
    [
        (b"GET /\r\n", 400, "bad_request", "HTTP/0.9"),  # an HTTP/0.9 request line, and nothing after it
        (b"GET /healthz\r\n\r\n", 400, "bad_request", "HTTP/0.9"),
        (b"GET /healthz HTTP/2.0\r\nHost: edge\r\n\r\n", 400, "http_version_not_supported", "HTTP/2.0"),
        (b"FOO BAR BAZ\r\n\r\n", 400, "bad_request", "Invalid method"),
        (b"GET /healthz HTTP/1.1\r\nHost: edge\r\nContent-Length: abc\r\n\r\n", 400, "bad_request", "Content-Length"),
        (b"GET /healthz HTTP/1.1\r\nHost edge\r\n\r\n", 400, "bad_request", "invalid HTTP request"),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40, 400, "bad_request", "invalid HTTP request"),
    ],
)
def test_what_is_not_http_1_gets_a_json_error_and_the_connection_closed(edge, request_bytes, status, code, mention):
    before = cut_counts(edge).get("invalid_request", 0)
    waited, answer, clean = exchange(edge.port, request_bytes)
    assert waited < 1, waited  # the header timeout (10 s) plays no part
    error = json_error(answer, status)
    assert error["code"] == code and mention in error["message"], error
    assert clean
    assert cut_counts(edge)["invalid_request"] == before + 1
    assert http_call(edge.url, "GET", "/healthz")[0] == 200


def assert_json_lines(text: str) -> list[dict]:
    lines = [line for line in text.splitlines() if line.strip()]
    for line in lines:
        try:
            json.loads(line)
        except ValueError:
            raise AssertionError(f"a log line that is not JSON: {line!r}\n--- the log:\n{text}") from None
    return [json.loads(line) for line in lines]


def test_an_edge_with_workers_logs_only_json_lines(module_cluster, catalog_skus):
    """uvicorn's worker processes apply the edge's logging too (they used to log text, and drop info lines)."""
    module_cluster.publish()
    edge = module_cluster.start_edge(
        "DE", args=["--workers", "2", "--profile-store", "off"]
    )  # beside the GB edge, its own data dir
    for body in (b'{"recent_items": []}', b'{"context": {"time": 1e300}}', b"{nope", b"[]"):
        assert http_call(edge.url, "POST", "/v1/recommendations", body, {"Content-Type": "application/json"})[0] in (
            200,
            400,
            422,
        )
    for raw in (b"FOO BAR BAZ\r\n\r\n", b"GET /\r\n", b"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n"):
        exchange(edge.port, raw)
    edge.stop()
    entries = assert_json_lines(edge.log_path.read_text())
    loggers = {e["logger"] for e in entries}
    assert "uvicorn.error" in loggers, entries  # its "invalid HTTP request" warnings
    assert sum("serving data version" in e["msg"] for e in entries) >= 2, entries  # one per worker


WARNINGS_IN_A_WORKER = """
import logging, warnings
import numpy as np
import uvicorn
from edge_node.limits import GuardedHttpToolsProtocol
from edgerec.core.logs import logging_config

# What uvicorn does in a worker process it spawns: apply the log_config the edge hands it, nothing else.
config = uvicorn.Config("edge_node.app:app_from_environment", factory=True, log_config=logging_config(),
                        log_level="warning", http=GuardedHttpToolsProtocol)
config.configure_logging()
np.asarray([1e308], dtype=np.float32)  # numpy: RuntimeWarning: overflow encountered in cast
warnings.warn("a warning of the code itself")
logging.getLogger("uvicorn.error").warning("from uvicorn")
logging.getLogger("edgerec.edge").info("from the edge")
"""


def test_python_warnings_are_logged_as_json_lines_in_every_edge_process():
    result = subprocess.run(
        [sys.executable, "-c", WARNINGS_IN_A_WORKER], capture_output=True, text=True, cwd=REPO, check=False, timeout=60
    )
    assert result.returncode == 0, result.stderr
    entries = assert_json_lines(result.stdout + result.stderr)
    warned = [e["msg"] for e in entries if e["logger"] == "py.warnings"]
    assert len(warned) == 2 and "RuntimeWarning: overflow encountered in cast" in warned[0], warned
    assert {"uvicorn.error", "edgerec.edge"} <= {e["logger"] for e in entries}
