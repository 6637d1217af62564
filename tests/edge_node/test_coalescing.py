"""A response's head held back and written with its body (edge_node.limits.CoalescingTransport): one write(2) for a
small answer, and nothing ever lost or reordered."""

from __future__ import annotations

import asyncio
import socket

import pytest

from edge_node.limits import CoalescingTransport
from tests.conftest import make_offer


class RecordingTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name, default=None):
        return {"peername": ("127.0.0.1", 1)}.get(name, default)


def test_a_held_head_goes_out_with_the_next_write_and_nothing_else_is_held():
    inner = RecordingTransport()
    transport = CoalescingTransport(inner)
    transport.write(b"100 Continue")  # not asked to hold: straight through
    transport.hold_next_write()
    transport.write(b"HEAD")
    assert inner.writes == [b"100 Continue"]
    transport.write(b"BODY")
    transport.write(b"MORE")
    assert inner.writes == [b"100 Continue", b"HEADBODY", b"MORE"]
    assert transport.get_extra_info("peername") == ("127.0.0.1", 1)  # the rest is the transport's own


@pytest.mark.parametrize("end", ["flush", "close"])
def test_a_held_head_without_a_body_is_written_when_the_response_completes_or_the_connection_closes(end):
    inner = RecordingTransport()
    transport = CoalescingTransport(inner)
    transport.hold_next_write()
    transport.write(b"HEAD")
    getattr(transport, end)()
    assert inner.writes == [b"HEAD"]
    assert inner.closed == (end == "close")
    transport.write(b"NEXT")  # the hold was for one write only
    assert inner.writes == [b"HEAD", b"NEXT"]


def test_pipelined_requests_on_one_connection_get_their_answers_whole_and_in_order(module_cluster, catalog_skus):
    module_cluster.publish()
    module_cluster.put_offer(make_offer(f"GB-{catalog_skus[0]}", catalog_skus[0]))
    edge = module_cluster.start_edge("GB")
    body = b'{"k": 1}'
    post = (
        b"POST /v1/recommendations HTTP/1.1\r\nHost: edge\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    head = b"HEAD /v1/recommendations?k=1 HTTP/1.1\r\nHost: edge\r\n\r\n"
    last = b"GET /healthz HTTP/1.1\r\nHost: edge\r\nConnection: close\r\n\r\n"
    with socket.create_connection(("127.0.0.1", edge.port), timeout=10) as sock:
        sock.sendall(post + head + post + last)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    # Four answers, in the order asked: a POST's, the HEAD's (no body), the second POST's, the health check's.
    assert answer.count(b"HTTP/1.1 ") == answer.count(b"HTTP/1.1 200 OK\r\n") == 4, answer[:600]
    parts = answer.split(b"HTTP/1.1 200 OK\r\n")[1:]
    assert [b"private, no-store" in p for p in parts[:3]] == [True, False, True]
    assert [p.rstrip().endswith(b"}") and b'"offers":[' in p for p in parts] == [True, False, True, False]
    assert b"public, max-age=0" in parts[1] and b"alive" in parts[3]
