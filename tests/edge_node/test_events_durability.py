"""A 202 means kept: a real edge under event load from concurrent clients is SIGKILLed again and again (and stopped
cleanly once) and restarted on the same data directory; every event that got a 202 reaches the origin's sink, and
none twice (with `--events-ack write`, the default, and `fsync`)."""

from __future__ import annotations

import http.client
import json
import random
import sqlite3
import threading
import time

import pytest

from tests.conftest import wait_until

KILLS = 3
CLIENTS = 4


def feedback_at_origin(cluster) -> list[str]:
    """The request_id of every feedback event (impressions aside) in the origin's SQLite sink, repeats kept."""
    path = cluster.workdir / "origin" / "events.db"
    if not path.exists():
        return []
    with sqlite3.connect(path) as db:
        return [r for (r,) in db.execute("SELECT request_id FROM events WHERE kind != 'impression'")]


class EventClient(threading.Thread):
    """Posts 1-3 clicks a request over a keep-alive connection, each with a request_id of its own; records the ids
    of the answers that were 202 (and nothing else: an answer cut by the kill is not an acknowledgement)."""

    def __init__(self, number: int, port: int, stop: threading.Event) -> None:
        super().__init__(name=f"event-client-{number}", daemon=True)
        self.number, self.port, self.stop = number, port, stop
        self.acknowledged: list[str] = []
        self.sent = self.cut = 0
        self.statuses: dict[int, int] = {}

    def run(self) -> None:
        rng = random.Random(self.number)
        connection: http.client.HTTPConnection | None = None
        while not self.stop.is_set():
            ids = [f"c{self.number}-{self.sent}-{k}" for k in range(rng.randint(1, 3))]
            self.sent += 1
            body = json.dumps({"events": [{"type": "click", "request_id": i, "offer_ids": ["GB-1"]} for i in ids]})
            try:
                if connection is None:
                    connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                connection.request("POST", "/v1/events", body, {"Content-Type": "application/json"})
                response = connection.getresponse()
                response.read()
            except (OSError, http.client.HTTPException):
                self.cut += 1  # the edge is down (killed, or not back yet): try again on a new connection
                if connection is not None:
                    connection.close()
                connection = None
                time.sleep(0.02)
                continue
            self.statuses[response.status] = self.statuses.get(response.status, 0) + 1
            if response.status == 202:
                self.acknowledged.extend(ids)
        if connection is not None:
            connection.close()


@pytest.mark.parametrize("ack", ["write", "fsync"])
def test_every_acknowledged_event_reaches_the_origin_once_across_edge_sigkills(cluster, ack):
    cluster.publish()
    env = {"EDGEREC_EVENTS_ACK": ack}
    edge = cluster.start_edge("GB", env=env)
    stop = threading.Event()
    clients = [EventClient(n, edge.port, stop) for n in range(CLIENTS)]
    for client in clients:
        client.start()
    rng = random.Random(26)
    try:
        for round_no in range(KILLS + 1):
            acknowledged_before = sum(len(c.acknowledged) for c in clients)
            time.sleep(rng.uniform(0.4, 0.9))  # under load: the kill lands in the middle of requests
            assert sum(len(c.acknowledged) for c in clients) > acknowledged_before, "no event was acknowledged"
            if round_no < KILLS:
                edge.kill()  # SIGKILL: no clean stop, nothing flushed
            else:
                edge.stop()  # and a clean stop (SIGTERM) under load: the answers in flight are settled, not lost
            edge = cluster.start_edge("GB", port=edge.port, env=env)  # the same data directory: the same spool
        time.sleep(0.5)
    finally:
        stop.set()
        for client in clients:
            client.join(10)
    acknowledged = [i for c in clients for i in c.acknowledged]
    assert len(acknowledged) == len(set(acknowledged)) > 1000  # enough load for the kills to cut requests
    assert sum(c.cut for c in clients) >= KILLS  # the edge was away: requests were cut or refused
    assert all(set(c.statuses) == {202} for c in clients), [c.statuses for c in clients]

    kept = set(acknowledged)
    try:
        wait_until(lambda: kept <= set(feedback_at_origin(cluster)), timeout_s=30,
                   what="every acknowledged event at the origin")
    except AssertionError:
        lost = sorted(kept - set(feedback_at_origin(cluster)))
        raise AssertionError(f"{len(lost)} of {len(kept)} events answered 202 never reached the origin: "
                             f"{lost[:10]}") from None
    wait_until(lambda: not list((cluster.workdir / "edge-GB" / "events").rglob("*.seg")), timeout_s=15,
               what="the spool drained to the origin")
    stored = feedback_at_origin(cluster)
    assert kept <= set(stored)  # every 202 was kept
    assert len(stored) == len(set(stored))  # and nothing arrived twice (an event cut unanswered may arrive once)


def test_an_unknown_events_ack_setting_is_refused_at_start(cluster):
    edge = cluster.start_edge("GB", env={"EDGEREC_EVENTS_ACK": "never"}, ready=False)
    assert edge.process.wait(timeout=30) == 2
    log = edge.log_tail()
    assert "--events-ack/EDGEREC_EVENTS_ACK: 'write' or 'fsync', not 'never'" in log and "Traceback" not in log
