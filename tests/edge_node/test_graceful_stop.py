"""SIGTERM drains a real edge process: `/readyz` answers 503 draining at once while answers and events are still
taken for the drain window, then the edge stops accepting, finishes the requests in flight (slow ones included),
ships its event spool to the origin and exits 0 within EDGEREC_SHUTDOWN_TIMEOUT_S."""

from __future__ import annotations

import json
import secrets
import socket
import sqlite3
import threading
import time
from contextlib import closing
from pathlib import Path

import pytest

from edgerec.cli.process import http_call, http_json
from tests.conftest import wait_until

DRAIN_S = 1.5
SHUTDOWN_TIMEOUT_S = 10.0
LOADERS = 4
SLOW_REQUESTS = 4


class SlowRequest:
    """A recommendation request in flight on its own connection: its headers and half its body sent now, the rest
    when `finish()` is called; then its answer is read."""

    def __init__(self, port: int, body: bytes) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        head = (
            f"POST /v1/recommendations HTTP/1.1\r\nHost: edge\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        self.rest = body[len(body) // 2 :]
        self.sock.sendall(head + body[: len(body) // 2])

    def finish(self) -> tuple[int, dict]:
        with closing(self.sock):
            self.sock.sendall(self.rest)
            raw = b""
            while b"\r\n\r\n" not in raw:
                raw += self.sock.recv(65536) or b"!"  # an empty read ends it: no answer came
                assert not raw.endswith(b"!"), f"connection closed before an answer: {raw!r}"
            head, _, body = raw.partition(b"\r\n\r\n")
            length = int(next(h.split(b":")[1] for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")))
            while len(body) < length:
                chunk = self.sock.recv(65536)
                assert chunk, "connection closed in the middle of the answer"
                body += chunk
            return int(head.split(b" ")[1]), json.loads(body)


def post_events(edge, request_ids: list[str], offer_id: str) -> None:
    """One click per request id, each posted and acknowledged (202)."""
    events = [{"type": "click", "request_id": r, "offer_ids": [offer_id], "shopper_id": "s-1"} for r in request_ids]
    status, body = http_json(edge.url, "POST", "/v1/events", {"events": events}, timeout=5)
    assert status == 202, body


def clicks_at_origin(workdir) -> set[str]:
    path = workdir / "origin" / "events.db"
    if not path.exists():
        return set()
    with closing(sqlite3.connect(path)) as db:
        return {r for (r,) in db.execute("SELECT request_id FROM events WHERE kind = 'click'")}


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return True
    return False


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_drains_finishes_answers_in_flight_ships_the_spool_and_exits_0(seeded, catalog_skus, workers):
    env = {"EDGEREC_DRAIN_S": str(DRAIN_S), "EDGEREC_SHUTDOWN_TIMEOUT_S": str(SHUTDOWN_TIMEOUT_S)}
    if workers > 1:  # uvicorn's supervisor passes the SIGTERM to each worker, and each drains
        env["EDGEREC_PROFILE_STORE"] = "off"  # the embedded store belongs to one process
    edge = seeded.start_edge("GB", args=["--workers", str(workers)], env=env)
    request = {"region": "GB", "shopper_id": "s-1", "recent_items": catalog_skus[:2], "k": 5}
    offer_id = f"GB-{catalog_skus[0]}"
    tag = secrets.token_hex(4)
    acked = [f"{tag}-before-{i}" for i in range(20)]
    post_events(edge, acked, offer_id)

    # Steady traffic from several clients, each on new connections, recording every status and when it came.
    answers: list[tuple[float, int]] = []
    stop_load = threading.Event()

    def load() -> None:
        while not stop_load.is_set():
            try:
                status, _ = http_json(edge.url, "POST", "/v1/recommendations", request, timeout=5)
            except OSError as exc:
                status = -1
                print("load:", exc)
            answers.append((time.monotonic(), status))

    loaders = [threading.Thread(target=load, daemon=True) for _ in range(LOADERS)]
    for thread in loaders:
        thread.start()
    slow = [SlowRequest(edge.port, json.dumps(request).encode()) for _ in range(SLOW_REQUESTS)]
    time.sleep(0.3)
    assert http_call(edge.url, "GET", "/readyz")[0] == 200
    body, json_type = json.dumps(request).encode(), {"Content-Type": "application/json"}
    assert "connection" not in http_call(edge.url, "POST", "/v1/recommendations", body, json_type)[1]

    sigterm = time.monotonic()
    edge.terminate()
    # Unready at once, and saying why.
    wait_until(lambda: http_call(edge.url, "GET", "/readyz", timeout=2)[0] == 503, 1.0, "/readyz 503", 0.01)
    unready_after = time.monotonic() - sigterm
    for _ in range(2 * workers):  # every worker (each new connection may reach another)
        status, _, raw = http_call(edge.url, "GET", "/readyz", timeout=2)
        ready = json.loads(raw)
        assert status == 503 and ready["draining"] is True and ready["reason"] == "draining" and not ready["ready"]
    assert http_call(edge.url, "GET", "/healthz", timeout=2)[0] == 200  # alive: not to be restarted
    # Clients on kept-alive connections are told to reconnect (to a replica the load balancer still sends to).
    status, headers, _ = http_call(edge.url, "POST", "/v1/recommendations", body, json_type, timeout=5)
    assert status == 200 and headers.get("connection") == "close", headers
    # Events are still taken; the last ones just before the window ends, so only the stop's flush can ship them.
    during = [f"{tag}-during-{i}" for i in range(10)]
    post_events(edge, during[:5], offer_id)
    time.sleep(max(0.0, sigterm + DRAIN_S - 0.35 - time.monotonic()))
    post_events(edge, during[5:], offer_id)
    acked += during
    stop_load.set()
    for thread in loaders:
        thread.join(10)
    in_window = [s for t, s in answers if t > sigterm]

    # The window over, the listener is closed, while the slow requests are still in flight.
    wait_until(lambda: refused(edge.port), DRAIN_S + 3, "the listener closed", 0.02)
    closed_after = time.monotonic() - sigterm
    finished = [r.finish() for r in slow]
    rc = edge.process.wait(SHUTDOWN_TIMEOUT_S + 5)
    exited_after = time.monotonic() - sigterm

    assert unready_after < 0.5, unready_after
    assert len(in_window) >= 10 and set(in_window) == {200}, sorted(set(in_window))
    assert all(status == 200 for _, status in answers), [s for _, s in answers if s != 200]
    assert DRAIN_S - 0.1 <= closed_after, closed_after  # the window was held
    assert [status for status, _ in finished] == [200] * SLOW_REQUESTS, finished
    assert all(answer["offers"] for _, answer in finished)
    assert rc == 0 and exited_after < SHUTDOWN_TIMEOUT_S, (rc, exited_after, edge.log_tail())
    # The spool was shipped at the stop: nothing left on the edge's disk, every acknowledged event at the origin.
    data_dir = edge.args[edge.args.index("--data-dir") + 1]
    left = [p.name for p in Path(data_dir).glob("events/**/*") if p.suffix in (".seg", ".open")]
    assert left == [], left
    assert set(acked) <= clicks_at_origin(seeded.workdir), set(acked) - clicks_at_origin(seeded.workdir)
