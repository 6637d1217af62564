"""The HTTP abuse probe against an edge with the default rate limits, as production runs it (the harness otherwise
turns them up out of reach, edgerec.cli.services.HARNESS_EDGE_LIMITS): one client bursts hostile and garbage
requests at it. Every one is answered, within a bound, with a 4xx (429 once its bucket is empty), never a 5xx, never
silence; other clients are served all along, by connection address and through the CDN; the edge logs no error and
is healthy afterwards."""

from __future__ import annotations

import json
import re
import socket
import threading
import time

import pytest

from edgerec.cli.process import free_port, http_call
from edgerec.cli.services import HARNESS_EDGE_LIMITS, edge_service
from tests.conftest import make_offer, readyz

CDN_SECRET = "cdn-secret-for-the-abuse-probe"
BURST = 600  # requests from one client, 8 at a time: several times the default burst of 100
ANSWER_BOUND_S = 3.0  # the slowest answer allowed (the edge's own timeouts, 5 s and 10 s, never come into it)
SPOOF = (
    b"X-Forwarded-For: 203.0.113.%d\r\nX-Edgerec-CDN-Secret: not-the-secret\r\n"
    b"CloudFront-Viewer-Country: DE\r\n"
)  # claims that must buy the client nothing without the secret


def post(path: bytes, body: bytes, content_type: bytes = b"application/json", extra: bytes = b"") -> bytes:
    return (
        b"POST "
        + path
        + b" HTTP/1.1\r\nHost: edge\r\nConnection: close\r\nContent-Type: "
        + content_type
        + b"\r\nContent-Length: %d\r\n" % len(body)
        + extra
        + b"\r\n"
        + body
    )


def get(target: bytes, extra: bytes = b"") -> bytes:
    return b"GET " + target + b" HTTP/1.1\r\nHost: edge\r\nConnection: close\r\n" + extra + b"\r\n"


def hostile_requests(offer: str) -> list[tuple[str, bytes]]:
    """(name, the bytes one connection sends): malformed HTTP, smuggling attempts, oversized and garbage bodies,
    out-of-range values, spoofed CDN headers; each deserves a 4xx and nothing else."""
    events = b'{"events": [{"type": "click", "request_id": "r1", "offer_ids": ["%s"]%s}]}'
    return [
        # Not HTTP/1.x, or broken HTTP.
        ("http/0.9", b"GET /\r\n"),
        ("http/2.0", b"GET /v1/recommendations HTTP/2.0\r\nHost: edge\r\n\r\n"),
        ("no method", b"FOO BAR BAZ\r\n\r\n"),
        ("tls hello", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40),
        ("binary", bytes(range(256)) * 4),
        ("header without colon", b"GET /healthz HTTP/1.1\r\nHost edge\r\n\r\n"),
        ("bad content-length", b"POST /v1/events HTTP/1.1\r\nHost: edge\r\nContent-Length: abc\r\n\r\n"),
        ("negative content-length", b"POST /v1/events HTTP/1.1\r\nHost: edge\r\nContent-Length: -5\r\n\r\n"),
        ("nul in target", b"GET /v1/recommendations\x00?k=3 HTTP/1.1\r\nHost: edge\r\n\r\n"),
        ("cr in header value", b"GET /healthz HTTP/1.1\r\nHost: edge\r\nX-A: a\rb\r\n\r\n"),
        # Request smuggling: the framing of the body made ambiguous.
        (
            "cl and te",
            b"POST /v1/events HTTP/1.1\r\nHost: edge\r\nContent-Type: application/json\r\n"
            b"Content-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /metrics HTTP/1.1\r\n\r\n",
        ),
        (
            "two content-lengths",
            b"POST /v1/events HTTP/1.1\r\nHost: edge\r\nContent-Type: application/json\r\n"
            b"Content-Length: 2\r\nContent-Length: 40\r\n\r\n{}",
        ),
        (
            "te obfuscated",
            b"POST /v1/events HTTP/1.1\r\nHost: edge\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: xchunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
        ),
        (
            "bad chunk size",
            b"POST /v1/events HTTP/1.1\r\nHost: edge\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
        ),
        # Too large.
        (
            "huge declared body",
            b"POST /v1/recommendations HTTP/1.1\r\nHost: edge\r\nContent-Type: application/json"
            b"\r\nContent-Length: 999999999\r\nExpect: 100-continue\r\n\r\n",
        ),
        (
            "huge chunked body",
            b"POST /v1/events HTTP/1.1\r\nHost: edge\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n" % (70_000, b"[" * 70_000),
        ),
        ("huge headers", get(b"/healthz", b"X-Fill: " + b"a" * 20_000 + b"\r\n")),
        ("huge target", get(b"/v1/recommendations?k=3&pad=" + b"a" * 20_000)),
        # Garbage and out-of-range bodies, with forged CDN claims.
        ("not json", post(b"/v1/recommendations", b"{nope", extra=SPOOF % 1)),
        ("json array", post(b"/v1/recommendations", b"[]", extra=SPOOF % 2)),
        ("deep nesting", post(b"/v1/recommendations", b"[" * 20_000 + b"]" * 20_000, extra=SPOOF % 3)),
        ("invalid utf-8", post(b"/v1/recommendations", b'{"recent_items": ["\xff\xfe\xfd"]}', extra=SPOOF % 4)),
        ("number overflow", post(b"/v1/recommendations", b'{"k": 1e999}', extra=SPOOF % 5)),
        ("nan", post(b"/v1/recommendations", b'{"k": NaN}', extra=SPOOF % 6)),
        ("epoch ms", post(b"/v1/recommendations", b'{"context": {"time": 1.7e12}}', extra=SPOOF % 7)),
        (
            "age overflow",
            post(b"/v1/recommendations", b'{"recent_items": [{"item": "A", "age_days": 1e308}]}', extra=SPOOF % 8),
        ),
        ("unknown field", post(b"/v1/recommendations", b'{"recent_items": [], "admin": true}', extra=SPOOF % 9)),
        ("xml", post(b"/v1/recommendations", b"<a/>", b"text/xml", extra=SPOOF % 10)),
        ("form", post(b"/v1/events", b"a=1&b=2", b"application/x-www-form-urlencoded", extra=SPOOF % 11)),
        ("empty events", post(b"/v1/events", b"", extra=SPOOF % 12)),
        ("events not a list", post(b"/v1/events", b'{"events": "all"}', extra=SPOOF % 13)),
        (
            "too many events",
            post(
                b"/v1/events",
                b'{"events": [%s]}' % b",".join([b'{"type": "click", "request_id": "r", "offer_ids": ["x"]}'] * 101),
                extra=SPOOF % 14,
            ),
        ),
        (
            "purchase without value",
            post(b"/v1/events", events % (offer.encode(), b', "type": "purchase"'), extra=SPOOF % 15),
        ),
        (
            "negative value",
            post(
                b"/v1/events",
                b'{"events": [{"type": "purchase", "request_id": "r1", "offer_ids": ["x"], "value": -1e308}]}',
                extra=SPOOF % 16,
            ),
        ),
        (
            "request id injection",
            post(
                b"/v1/events",
                b'{"events": [{"type": "click", "request_id": "r1\\r\\nX: y", "offer_ids": ["x"]}]}',
                extra=SPOOF % 17,
            ),
        ),
        ("unserved region", post(b"/v1/events", events % (offer.encode(), b', "region": "ZZ"'), extra=SPOOF % 18)),
        ("k unicode digit", get(b"/v1/recommendations?k=%C2%B2", SPOOF % 19)),
        ("k huge", get(b"/v1/recommendations?k=99999999999999999999999", SPOOF % 20)),
        ("bad region", get(b"/v1/recommendations?region=%00%ff", SPOOF % 21)),
        # Where nothing is.
        ("no such path", get(b"/v1/admin/offers")),
        ("traversal", get(b"/../../etc/passwd")),
        ("wrong method", b"DELETE /v1/recommendations HTTP/1.1\r\nHost: edge\r\nConnection: close\r\n\r\n"),
        ("events by get", get(b"/v1/events")),
    ]


def exchange(data: bytes, source: str = "127.0.0.1", port: int = 0) -> tuple[float, bytes]:
    """Send `data` on a new connection from `source`; (seconds to the end of the answer, the answer)."""
    with socket.create_connection(("127.0.0.1", port), timeout=ANSWER_BOUND_S + 5, source_address=(source, 0)) as s:
        started = time.monotonic()
        try:
            s.sendall(data)
        except OSError:  # the edge answered and closed before it took everything: the answer is still to read
            pass
        answer = b""
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            except TimeoutError:
                return float("inf"), answer
            if not chunk:
                break
            answer += chunk
            if _complete(answer):
                break
        return time.monotonic() - started, answer


def _complete(answer: bytes) -> bool:
    head, sep, body = answer.partition(b"\r\n\r\n")
    match = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    return bool(sep) and match is not None and len(body) >= int(match.group(1))


def _statuses(results: list[tuple[str, float, bytes]]) -> dict[int | None, set[str]]:
    by_status: dict[int | None, set[str]] = {}
    for name, _, answer in results:
        by_status.setdefault(status_of(answer), set()).add(name)
    return by_status


def status_of(answer: bytes) -> int | None:
    match = re.match(rb"HTTP/1\.[01] (\d{3}) ", answer)
    return int(match.group(1)) if match else None


@pytest.fixture(scope="module")
def production_limited_edge(module_cluster, catalog_skus):
    """An edge with the default per-client limits: the harness's lifted limits taken out of its environment."""
    module_cluster.publish()
    for sku in catalog_skus[:10]:
        module_cluster.put_offer(make_offer(f"GB-{sku}", sku))
    edge = edge_service(
        module_cluster.workdir,
        "GB",
        free_port(),
        module_cluster.origin.url,
        module_cluster.region_tokens["GB"],
        extra_env={"EDGEREC_CDN_SECRET": CDN_SECRET, "EDGEREC_PSEUDONYM_KEY": module_cluster.pseudonym_key},
    )
    module_cluster.edges.append(edge)
    with pytest.MonkeyPatch.context() as environment:
        for name in HARNESS_EDGE_LIMITS:  # neither from the harness nor from the environment of this run
            edge.env.pop(name)
            environment.delenv(name, raising=False)
        edge.start()
    edge.wait_ready("/readyz")
    return edge


def test_a_burst_of_hostile_requests_under_default_limits_gets_only_prompt_4xx_and_others_are_served(
    production_limited_edge, catalog_skus
):
    edge = production_limited_edge
    requests = hostile_requests(f"GB-{catalog_skus[0]}")
    results: list[tuple[str, float, bytes]] = []
    lock = threading.Lock()
    next_one = iter(range(BURST))

    def client() -> None:
        for i in next_one:  # shared: the 8 threads take the next request number in turn
            name, data = requests[i % len(requests)]
            waited, answer = exchange(data, port=edge.port)
            with lock:
                results.append((name, waited, answer))

    # Meanwhile two shoppers ask for recommendations at 10 a second each, well within their rate: one from another
    # address, one behind the CDN (the secret makes its X-Forwarded-For the client).
    recommendation = post(b"/v1/recommendations", json.dumps({"recent_items": catalog_skus[:3]}).encode())
    behind_cdn = recommendation.replace(
        b"\r\n\r\n",
        b"\r\nX-Forwarded-For: 198.51.100.20\r\nX-Edgerec-CDN-Secret: " + CDN_SECRET.encode() + b"\r\n\r\n",
        1,
    )
    bystanders: list[tuple[str, float, int | None]] = []
    burst_over = threading.Event()

    def shoppers() -> None:
        while not burst_over.is_set() or not bystanders:
            for who, data, source in (
                ("other address", recommendation, "127.0.0.2"),
                ("behind the CDN", behind_cdn, "127.0.0.1"),
            ):
                waited, answer = exchange(data, source=source, port=edge.port)
                bystanders.append((who, waited, status_of(answer)))
            time.sleep(0.1)

    threads = [threading.Thread(target=client) for _ in range(8)]
    shopping = threading.Thread(target=shoppers)
    started = time.monotonic()
    shopping.start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    elapsed = time.monotonic() - started
    burst_over.set()
    shopping.join(30)
    assert len(results) == BURST
    assert bystanders and all(status == 200 and waited < ANSWER_BOUND_S for _, waited, status in bystanders), bystanders

    silent = sorted({name for name, _, answer in results if status_of(answer) is None})
    assert not silent, f"requests that got no HTTP answer: {silent}"
    slow = sorted({(name, round(waited, 2)) for name, waited, _ in results if waited > ANSWER_BOUND_S})
    assert not slow, f"answers slower than {ANSWER_BOUND_S} s: {slow}"
    by_status = _statuses(results)
    assert all(400 <= status < 500 for status in by_status), {s: sorted(n) for s, n in by_status.items()}
    # The limiter was on, keyed on the connection's address (the forged X-Forwarded-For bought nothing): once
    # the default burst was spent, the application's routes answered 429 with a Retry-After.
    assert 429 in by_status, (elapsed, {s: sorted(n) for s, n in by_status.items()})
    forged = {name for name, data in requests if b"X-Forwarded-For" in data}  # each name its own forged address
    assert by_status[429] & forged, "requests with a forged X-Forwarded-For were never limited"
    for _, _, answer in results:
        if status_of(answer) == 429:
            head = answer.partition(b"\r\n\r\n")[0].lower()
            assert re.search(rb"^retry-after: [1-9]\d*\r?$", head, re.M), head
    for _, _, answer in results:  # always a JSON error, never a bare page
        assert json.loads(answer.partition(b"\r\n\r\n")[2])["error"]["code"], answer[:300]

    # Healthy afterwards; and the hostile client itself, back within its rate (it earns a token every 20 ms), is
    # served again: a limit, not a ban.
    assert http_call(edge.url, "GET", "/healthz")[0] == 200
    assert readyz(edge)["ready"]
    time.sleep(0.1)
    _, answer = exchange(recommendation, port=edge.port)
    assert status_of(answer) == 200, answer[:300]

    metrics = http_call(edge.url, "GET", "/metrics")[2].decode()
    assert not re.search(r'^edgerec_requests_total\{[^}]*status="5\d\d"', metrics, re.M)
    log = edge.log_path.read_text()
    entries = [json.loads(line) for line in log.splitlines() if line.strip()]  # every line JSON
    assert not [e for e in entries if e["level"] in ("error", "critical")], log[-3000:]
    assert "Traceback" not in log
