"""Locust traffic for edgerec: anonymous and returning shoppers across regions, with a spread of k.

Returning shoppers carry a real customer's purchase history (the shared Online Retail data when
present, synthetic otherwise); anonymous shoppers send no history and take the CDN-cacheable form.
`python -m benchmarks.latency` drives this file; it also runs on its own:

    locust -f benchmarks/locustfile.py --host http://127.0.0.1:8000

Settings come from the environment (the harness sets them):
EDGEREC_BENCH_TRAFFIC (traffic JSON; built from the data when unset), EDGEREC_BENCH_TARGET
(edgerec | ceiling | cdn | peer | peer_padded), EDGEREC_BENCH_HOSTS (comma-separated base URLs; users spread over
them), EDGEREC_BENCH_RATE (total offered req/s; 0 = each user sends as fast as answers come),
EDGEREC_BENCH_USERS, EDGEREC_BENCH_CONTRACT (JSON, what the edge understands),
EDGEREC_CDN_SECRET, EDGEREC_BENCH_HIST_DIR and EDGEREC_BENCH_WARMUP_S (where, and after how long,
each locust process writes its exact latency histogram: locust's own rounds to whole milliseconds).
"""

from __future__ import annotations

import itertools
import json
import os
import random
import sys
import time
from pathlib import Path

from locust import FastHttpUser, events, task

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.histogram import LatencyRecorder  # noqa: E402
from benchmarks.traffic import Contract, RequestMix, load_traffic  # noqa: E402

TARGET = os.environ.get("EDGEREC_BENCH_TARGET", "edgerec")
RATE = float(os.environ.get("EDGEREC_BENCH_RATE", "0") or 0)
USERS = max(1, int(os.environ.get("EDGEREC_BENCH_USERS", "1") or 1))
HOSTS = [h for h in os.environ.get("EDGEREC_BENCH_HOSTS", "").split(",") if h]
CDN_SECRET = os.environ.get("EDGEREC_CDN_SECRET", "edgerec-bench-cdn-secret")
# Standalone default: the anonymous GET form, region in the query/body (the geo header needs the edge's secret).
CONTRACT = Contract(
    **json.loads(os.environ.get("EDGEREC_BENCH_CONTRACT", '{"anonymous_get": true, "geo_header": false}'))
)


def _traffic() -> dict:
    path = os.environ.get("EDGEREC_BENCH_TRAFFIC")
    if path:
        return load_traffic(path)
    # Standalone use: draw the shoppers from the data here (a few seconds on Online Retail).
    from benchmarks.traffic import DEFAULT_REGIONS, build_traffic, resolve_data
    from models.data import read_transactions
    from models.synthetic import write_synthetic_transactions

    data, _ = resolve_data("auto")
    if data is None:
        import tempfile

        data = write_synthetic_transactions(Path(tempfile.mkdtemp()) / "transactions.csv.gz", seed=7)
    return build_traffic(read_transactions(data), DEFAULT_REGIONS, context_length=50, anonymous_share=0.3)


TRAFFIC = _traffic()
RECORDER = LatencyRecorder(warmup_s=float(os.environ.get("EDGEREC_BENCH_WARMUP_S", "0") or 0))
_host_cycle = itertools.cycle(HOSTS) if HOSTS else None
_user_seed = itertools.count(os.getpid() * 1000)


@events.request.add_listener
def _record(request_type, name, response_time, response_length, exception=None, start_time=None, **_):
    RECORDER.record(name, response_time, exception is not None, start_time)


@events.quitting.add_listener
def _write_histogram(environment, **_):
    out = os.environ.get("EDGEREC_BENCH_HIST_DIR")
    if out and RECORDER.count:
        Path(out).mkdir(parents=True, exist_ok=True)
        Path(out, f"hist-{os.getpid()}.json").write_text(json.dumps(RECORDER.to_json()))


class Shopper(FastHttpUser):
    """One browser session: sends a request, waits for the answer, sends the next (paced when RATE is set)."""

    host = HOSTS[0] if HOSTS else None

    def __init__(self, environment):
        if _host_cycle is not None:
            self.host = next(_host_cycle)  # spread users over the server processes
        super().__init__(environment)
        self.mix = RequestMix(TRAFFIC, TARGET, CONTRACT, CDN_SECRET, seed=next(_user_seed))
        self.interval = USERS / RATE if RATE > 0 else 0.0
        self.next_send: float | None = None

    def wait_time(self) -> float:
        """Closed loop without RATE. With it, a fixed schedule: sends are due every `interval` from a random
        phase, and a late answer is caught up at once (locust's constant_throughput counts from the last
        answer instead, so it falls short of the asked rate and users drift into step)."""
        if not self.interval:
            return 0.0
        now = time.monotonic()
        if self.next_send is None:
            self.next_send = now + random.random() * self.interval
        else:
            self.next_send += self.interval
        return max(0.0, self.next_send - now)

    @task
    def recommend(self) -> None:
        req = self.mix.next()
        self.client.request(req.method, req.path, data=req.body, headers=req.headers, name=req.kind)
