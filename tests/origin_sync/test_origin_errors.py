"""Every error of a real origin is JSON `{"error": {"code", "message"}}` with its 4xx status, aiohttp's own answers
included: unknown routes, trailing slashes, wrong methods, bodies too large, requests that are not HTTP."""

from __future__ import annotations

import http.client
import json
import socket

import pytest

from edgerec.cli.process import http_call


def assert_json_error(answer: tuple[int, dict[str, str], bytes], status: int, code: str) -> dict:
    """The one check of every case: the status, a JSON content type (never text/plain) and the error object."""
    got_status, headers, body = answer
    assert headers.get("content-type", "").startswith("application/json"), (got_status, headers, body[:200])
    error = json.loads(body)["error"]
    assert (got_status, error["code"]) == (status, code), error
    assert isinstance(error["message"], str) and error["message"] and "\n" not in error["message"]
    return error


def raw_exchange(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send `request` as is (however malformed) and read the one response."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        response = http.client.HTTPResponse(sock)
        response.begin()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()


@pytest.fixture(scope="module")
def origin(module_cluster):
    return module_cluster


def admin(origin) -> dict[str, str]:
    return {"Authorization": f"Bearer {origin.admin_token}"}


def sync(origin) -> dict[str, str]:
    return {"Authorization": f"Bearer {origin.sync_token}"}


def test_an_unknown_route_is_a_json_404_naming_the_path(origin):
    error = assert_json_error(http_call(origin.origin.url, "GET", "/nowhere"), 404, "not_found")
    assert "/nowhere" in error["message"]
    assert_json_error(http_call(origin.origin.url, "GET", "/v1/admin/nowhere", headers=admin(origin)), 404, "not_found")
    assert_json_error(http_call(origin.origin.url, "GET", "/v1/sync/nowhere", headers=sync(origin)), 404, "not_found")


@pytest.mark.parametrize(
    "path, auth",
    [
        ("/healthz/", None),
        ("/v1/admin/models/", admin),
        ("/v1/admin/offers/o1/", admin),
        ("/v1/sync/snapshot/?regions=GB", sync),
    ],
)
def test_a_trailing_slash_is_a_json_404_that_names_the_path_without_it(origin, path, auth):
    headers = auth(origin) if auth else {}
    error = assert_json_error(http_call(origin.origin.url, "GET", path, headers=headers), 404, "not_found")
    assert "no trailing slash" in error["message"] and path.split("?")[0].rstrip("/") in error["message"]


@pytest.mark.parametrize(
    "method, path, auth",
    [
        ("DELETE", "/healthz", None),
        ("POST", "/readyz", None),
        ("PUT", "/v1/admin/models", admin),
        ("POST", "/v1/sync/deltas", sync),
    ],
)
def test_a_wrong_method_is_a_json_405_with_the_allow_header(origin, method, path, auth):
    answer = http_call(origin.origin.url, method, path, b"{}", headers=auth(origin) if auth else {})
    error = assert_json_error(answer, 405, "method_not_allowed")
    assert "GET" in answer[1]["allow"] and "GET" in error["message"]


def test_a_declared_body_over_the_limit_is_a_json_413_before_it_is_sent(origin):
    for path, size in (("/v1/admin/offers/o1", 17 * 1024 * 1024), ("/v1/admin/models", 300 * 1024 * 1024)):
        method = "PUT" if "offers" in path else "POST"
        request = (
            f"{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {origin.admin_token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {size}\r\n\r\n"
        ).encode()
        error = assert_json_error(raw_exchange(origin.origin.port, request), 413, "body_too_large")
        assert str(size) in error["message"]


def test_a_chunked_body_over_the_limit_is_a_json_413(origin):
    chunk = b"x" * (1024 * 1024)
    head = (
        f"POST /v1/admin/offers HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {origin.admin_token}\r\n"
        "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    ).encode()
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(17)) + b"0\r\n\r\n"
    assert_json_error(raw_exchange(origin.origin.port, head + body), 413, "body_too_large")


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GARBAGE\r\n\r\n",  # not a request line
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n",  # a header without a name
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Long: " + b"a" * 10000 + b"\r\n\r\n",  # a header over aiohttp's bound
        b"POST /v1/admin/offers HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",  # a length that is no number
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",  # two lengths
    ],
    ids=["request-line", "header-name", "header-too-long", "content-length", "two-lengths"],
)
def test_a_request_that_is_not_valid_http_is_a_json_400(origin, request_bytes):
    error = assert_json_error(raw_exchange(origin.origin.port, request_bytes), 400, "bad_request")
    assert error["message"].startswith("not a valid HTTP request")


def test_an_unknown_expectation_is_a_json_417(origin):
    request = b"POST /v1/admin/offers HTTP/1.1\r\nHost: x\r\nExpect: teapot\r\nContent-Length: 2\r\n\r\n{}"
    assert_json_error(raw_exchange(origin.origin.port, request), 417, "expectation_failed")


def test_refusals_of_handlers_and_of_auth_are_json_too(origin):
    url = origin.origin.url
    assert_json_error(http_call(url, "GET", "/v1/admin/models"), 401, "unauthorized")
    assert_json_error(http_call(url, "PUT", "/v1/admin/offers/o1", b"{nope", admin(origin)), 400, "invalid_json")
    assert_json_error(
        http_call(url, "PATCH", "/v1/admin/offers/o1", b"{}", admin(origin)), 415, "unsupported_media_type"
    )
    assert_json_error(http_call(url, "GET", "/v1/admin/offers/missing", headers=admin(origin)), 404, "not_found")
    assert_json_error(
        http_call(url, "GET", "/v1/sync/deltas?regions=GB&since=x", headers=sync(origin)), 422, "invalid_query"
    )
