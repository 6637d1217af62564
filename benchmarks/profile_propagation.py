"""From a posted event to every replica of the region seeing it: a new shopper's purchase is posted to one replica
(`POST /v1/events`, taken in turn by each), and every replica is asked for that shopper's recommendations until its
answer says `"profile": "hit"`; the time from sending the event to the answer that shows it, per replica."""

from __future__ import annotations

import http.client
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from edgerec.cli.process import Service

TIMEOUT_S = 30.0  # an event no replica shows by then is counted as unseen


class Connection:
    """One keep-alive connection to a replica (reopened after an error)."""

    def __init__(self, url: str) -> None:
        self.host_port = url.split("://", 1)[1].rstrip("/")
        self.conn: http.client.HTTPConnection | None = None

    def post(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        raw = json.dumps(body).encode()
        for attempt in (1, 2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host_port, timeout=10)
            try:
                self.conn.request("POST", path, body=raw, headers={"Content-Type": "application/json"})
                resp = self.conn.getresponse()
                data = resp.read()
                return resp.status, (json.loads(data) if data else {})
            except (OSError, http.client.HTTPException):
                self.conn.close()
                self.conn = None
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()


@dataclass
class Pending:
    shopper: str
    taker: int
    sent: float
    ack_ms: float
    seen: dict[int, float] = field(default_factory=dict)  # replica index -> ms after sending


def _post_event(conns: list[Connection], taker: int, shopper: str, region: str) -> Pending:
    """A first (anonymous) answer for the new shopper, then their purchase of its first offer."""
    status, answer = conns[taker].post("/v1/recommendations", {"shopper_id": shopper, "region": region, "k": 1})
    if status != 200 or answer.get("profile") != "miss":
        raise RuntimeError(f"a new shopper's first answer: HTTP {status} {answer}")
    event = {
        "type": "purchase",
        "request_id": answer["request_id"],
        "offer_ids": [answer["offers"][0]["offer_id"]],
        "shopper_id": shopper,
        "region": region,
        "value": 9.99,
        "currency": "GBP",
    }
    sent = time.perf_counter()
    status, body = conns[taker].post("/v1/events", {"events": [event]})
    ack_ms = (time.perf_counter() - sent) * 1000.0
    if status != 202:
        raise RuntimeError(f"POST /v1/events: HTTP {status} {body}")
    return Pending(shopper, taker, sent, ack_ms)


def measure_propagation(replicas: list[Service], region: str, events: int, pace_s: float = 0.0) -> dict[str, Any]:
    """`events` new shoppers' purchases; with pace_s 0 the next is posted once every replica showed the last, else
    one every pace_s seconds while earlier ones are still polled (a slow path would take minutes one by one)."""
    conns = [Connection(r.url) for r in replicas]
    token = secrets.token_hex(4)
    pending: list[Pending] = []
    done: list[Pending] = []
    next_post = time.perf_counter()
    posted = 0
    try:
        while posted < events or pending:
            now = time.perf_counter()
            if posted < events and (now >= next_post if pace_s > 0 else not pending):
                pending.append(_post_event(conns, posted % len(conns), f"prop-{token}-{posted}", region))
                posted += 1
                next_post += pace_s
            for item in list(pending):
                for index, conn in enumerate(conns):
                    if index in item.seen:
                        continue
                    status, answer = conn.post(
                        "/v1/recommendations", {"shopper_id": item.shopper, "region": region, "k": 1}
                    )
                    if status == 200 and answer.get("profile") == "hit":
                        item.seen[index] = (time.perf_counter() - item.sent) * 1000.0
                if len(item.seen) == len(conns) or time.perf_counter() - item.sent > TIMEOUT_S:
                    pending.remove(item)
                    done.append(item)
            if pace_s > 0 and pending and posted >= events:
                time.sleep(0.005)  # only polling left: do not spin the shared load core
    finally:
        for conn in conns:
            conn.close()
    return summarize(done, [r.name for r in replicas], pace_s)


def _quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, max(0, int(round(q * len(ordered) + 0.5)) - 1))], 3)


def summarize(done: list[Pending], names: list[str], pace_s: float) -> dict[str, Any]:
    complete = [d for d in done if len(d.seen) == len(names)]
    every = [max(d.seen.values()) for d in complete]
    other = [v for d in complete for i, v in d.seen.items() if i != d.taker]
    own = [d.seen[d.taker] for d in done if d.taker in d.seen]
    return {
        "replicas": names,
        "events": len(done),
        "unseen": len(done) - len(complete),
        "pace_s": pace_s,
        "p50_ms": _quantile(every, 0.5),
        "p90_ms": _quantile(every, 0.9),
        "p99_ms": _quantile(every, 0.99),
        "max_ms": _quantile(every, 1.0),
        "other_replica_p99_ms": _quantile(other, 0.99),
        "taking_replica_p99_ms": _quantile(own, 0.99),
        "event_ack_p50_ms": _quantile([d.ack_ms for d in done], 0.5),
        "event_ack_p99_ms": _quantile([d.ack_ms for d in done], 0.99),
        "every_replica_ms": sorted(round(v, 3) for v in every),  # for the CDF plot
    }


def redis_cleanup(url: str, prefix: str) -> int:
    """Delete the run's keys from the shared Redis (other work uses the same server)."""
    try:
        import redis
    except ImportError:
        return 0
    try:
        client = redis.Redis.from_url(url)
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        for start in range(0, len(keys), 1000):
            client.delete(*keys[start : start + 1000])
        client.close()
        return len(keys)
    except redis.RedisError:
        return 0
