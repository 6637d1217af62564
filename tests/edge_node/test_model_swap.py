"""Hot model swap under load: a new model and a rollback go live through sync with no failed request."""

from __future__ import annotations

import http.client
import json
import threading
import time

from tests.conftest import make_offer


class Load(threading.Thread):
    """Keep-alive POSTs in a loop, recording every status and model version seen."""

    def __init__(self, port: int, body: bytes) -> None:
        super().__init__(daemon=True)
        self.port, self.body = port, body
        self.statuses: dict[int, int] = {}
        self.versions: list[str] = []
        self.errors: list[str] = []
        self.stop = threading.Event()

    def run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        while not self.stop.is_set():
            try:
                conn.request("POST", "/v1/recommendations", self.body, {"Content-Type": "application/json"})
                resp = conn.getresponse()
                raw = resp.read()
            except OSError as exc:  # a dropped connection counts as a failed request
                self.errors.append(repr(exc))
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                continue
            self.statuses[resp.status] = self.statuses.get(resp.status, 0) + 1
            if resp.status == 200:
                version = json.loads(raw)["model_version"]
                if not self.versions or self.versions[-1] != version:
                    self.versions.append(version)


def test_a_new_model_and_a_rollback_go_live_with_no_failed_request(cluster, catalog_skus, second_bundle_dir):
    first = cluster.publish()["model_version"]
    for sku in catalog_skus[:40]:
        cluster.put_offer(make_offer(f"GB-{sku}", sku))
    edge = cluster.start_edge("GB")
    load = Load(edge.port, json.dumps({"recent_items": catalog_skus[:5], "k": 10}).encode())
    load.start()
    try:
        time.sleep(0.5)
        second = cluster.publish(second_bundle_dir)["model_version"]
        assert second != first
        deadline = time.monotonic() + 20
        while second not in load.versions:
            assert time.monotonic() < deadline, "the new model never went live"
            time.sleep(0.05)
        status, answer = cluster_call(cluster, "POST", f"/v1/admin/models/{first}/activate")
        assert status == 200
        while load.versions[-1] != first:
            assert time.monotonic() < deadline, "the rollback never went live"
            time.sleep(0.05)
        time.sleep(0.3)
    finally:
        load.stop.set()
        load.join(10)
    assert load.errors == []
    assert set(load.statuses) == {200}, load.statuses
    assert load.versions == [first, second, first]
    assert sum(load.statuses.values()) > 100


def cluster_call(cluster, method: str, path: str):
    from edgerec.cli.process import http_json

    return http_json(cluster.origin.url, method, path, None, {"Authorization": f"Bearer {cluster.admin_token}"})
