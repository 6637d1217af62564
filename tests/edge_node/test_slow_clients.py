"""A client that sends its body too slowly is cut off with a 408 JSON error; the edge keeps serving others."""

from __future__ import annotations

import json
import socket
import time

from edgerec.services import http_json
from tests.conftest import make_offer


def test_a_body_that_never_completes_gets_408_and_the_edge_keeps_serving(module_cluster, catalog_skus):
    module_cluster.publish()
    module_cluster.put_offer(make_offer(f"GB-{catalog_skus[0]}", catalog_skus[0]))
    edge = module_cluster.start_edge("GB")
    with socket.create_connection(("127.0.0.1", edge.port), timeout=15) as sock:
        sock.sendall(b"POST /v1/recommendations HTTP/1.1\r\nHost: edge\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 100\r\n\r\n{\"k\": ")
        started = time.monotonic()
        # Meanwhile other shoppers are served as usual.
        assert http_json(edge.url, "POST", "/v1/recommendations", {"recent_items": []})[0] == 200
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
    waited = time.monotonic() - started
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408"), head
    assert json.loads(body)["error"]["code"] == "body_timeout"
    assert 4 < waited < 10
