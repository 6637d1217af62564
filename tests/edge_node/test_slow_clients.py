"""A client that sends its body too slowly is cut off with a 408 JSON error; the edge keeps serving others."""

from __future__ import annotations

import json
import socket
import time

from edgerec.cli.process import http_json
from tests.conftest import make_offer


def test_a_body_that_never_completes_gets_408_and_the_edge_keeps_serving(module_cluster, catalog_skus):
    """On both routes that read a body; the connection is cut (and counted) after 5 s, wherever the app waits."""
    module_cluster.publish()
    module_cluster.put_offer(make_offer(f"GB-{catalog_skus[0]}", catalog_skus[0]))
    edge = module_cluster.start_edge("GB")
    stalled = []  # both routes' bodies stall at once: their 5 s run side by side
    for path in (b"/v1/recommendations", b"/v1/events"):
        sock = socket.create_connection(("127.0.0.1", edge.port), timeout=15)
        sock.sendall(
            b"POST " + path + b" HTTP/1.1\r\nHost: edge\r\nContent-Type: application/json\r\n"
            b'Content-Length: 100\r\n\r\n{"k": '
        )
        stalled.append((path, sock, time.monotonic()))
    # Meanwhile other shoppers are served as usual.
    assert http_json(edge.url, "POST", "/v1/recommendations", {"recent_items": []})[0] == 200
    for path, sock, started in stalled:
        with sock:
            answer = b""
            while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
                chunk = sock.recv(4096)
                if not chunk:
                    break
                answer += chunk
            waited = time.monotonic() - started
            head, _, body = answer.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 408"), (path, head)
            assert json.loads(body)["error"]["code"] == "body_timeout"
            assert 4 < waited < 10
            assert _closed(sock)
    with socket.create_connection(("127.0.0.1", edge.port), timeout=15) as sock:
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: edge\r\nConnection: close\r\n\r\n")
        _, metrics = _read_answer(sock)
    assert b'edgerec_connections_cut_total{reason="body_timeout"} 2.0' in metrics
    # A cut body is the client's fault: no route logs it as an error of its own (POST /v1/events did, with a
    # traceback, when its read of the body ended in a disconnect).
    errors = [line for line in edge.log_path.read_text().splitlines() if '"level":"error"' in line]
    assert not errors, errors


def _read_answer(sock: socket.socket) -> tuple[bytes, bytes]:
    answer = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            break
        answer += chunk
        head, _, body = answer.partition(b"\r\n\r\n")
        if b"content-length:" in head.lower():
            length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            if len(body) >= length:
                break
    head, _, body = answer.partition(b"\r\n\r\n")
    return head, body


def _closed(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def test_headers_too_large_or_too_slow_are_cut_off_with_json_errors_and_counted(module_cluster, catalog_skus):
    module_cluster.publish()
    edge = module_cluster.start_edge("GB", env={"EDGEREC_HEADER_TIMEOUT_S": "1", "EDGEREC_MAX_HEADER_BYTES": "16384"})
    request = b"GET /healthz HTTP/1.1\r\nHost: edge\r\n"

    # A 12 KB header is served; 2 MB of header gets 431 once the bound is passed, not after buffering it all.
    with socket.create_connection(("127.0.0.1", edge.port), timeout=15) as sock:
        sock.sendall(request + b"X-Fine: " + b"a" * 12_000 + b"\r\n\r\n")
        head, _ = _read_answer(sock)
        assert head.startswith(b"HTTP/1.1 200"), head
        time.sleep(1.5)  # idle on a kept-alive connection: the keep-alive timeout rules there, not the header one
        sock.sendall(request + b"X-Big: " + b"a" * 2_000_000 + b"\r\n\r\n")
        head, body = _read_answer(sock)
        assert head.startswith(b"HTTP/1.1 431") and b"connection: close" in head.lower(), head
        assert json.loads(body)["error"]["code"] == "header_too_large"

    # A request line and headers that stall, and a connection that never sends anything, get 408 after 1 s.
    for opening in (request, b""):
        with socket.create_connection(("127.0.0.1", edge.port), timeout=15) as sock:
            sock.sendall(opening)
            started = time.monotonic()
            head, body = _read_answer(sock)
            assert 0.8 < time.monotonic() - started < 5
            assert head.startswith(b"HTTP/1.1 408"), head
            assert json.loads(body)["error"]["code"] == "header_timeout"
            assert _closed(sock)

    assert http_json(edge.url, "POST", "/v1/recommendations", {"recent_items": []})[0] in (200, 503)
    with socket.create_connection(("127.0.0.1", edge.port), timeout=15) as sock:
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: edge\r\nConnection: close\r\n\r\n")
        _, metrics = _read_answer(sock)
    assert b'edgerec_connections_cut_total{reason="header_too_large"} 1.0' in metrics
    assert b'edgerec_connections_cut_total{reason="header_timeout"} 2.0' in metrics
