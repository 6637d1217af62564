"""The origin's admin and sync API over HTTP: authentication, validation, versions and long-poll."""

from __future__ import annotations

import json
import threading
import time

import msgpack
import pytest

from edgerec.cli.process import free_port, http_call, http_json
from edgerec.cli.services import ensure_signing_keys, origin_service
from origin_sync.wire.signing import Verifier, open_envelope
from tests.conftest import make_offer


@pytest.fixture(scope="module")
def shared(module_cluster):
    """One origin for the tests that change nothing on it or read back only what they wrote themselves (none of
    them publishes a model or ships events): a fresh origin each for the tests of exact versions and counts."""
    return module_cluster


def _sync(cluster, path: str, token: str | None = None) -> tuple[int, dict, bytes]:
    headers = {"Authorization": f"Bearer {token or cluster.sync_token}"}
    return http_call(cluster.origin.url, "GET", path, headers=headers, timeout=30)


def _opened(cluster, raw: bytes, kind: str = "deltas") -> dict:
    """A signed payload, verified with the origin's public key as an edge would."""
    payload = open_envelope(raw, kind, Verifier.from_config(str(ensure_signing_keys(cluster.workdir)[1])))
    if kind == "deltas":
        payload["changes"] = [msgpack.unpackb(c["body"]) for c in payload["changes"]]
    return payload


@pytest.mark.parametrize(
    "method,path,body",
    [
        ("PUT", "/v1/admin/offers/o1", make_offer("o1", "10001")),
        ("DELETE", "/v1/admin/offers/o1", None),
        ("GET", "/v1/admin/models", None),
        ("POST", "/v1/admin/models", {}),
        ("POST", "/v1/admin/models/m1/activate", None),
    ],
)
def test_admin_calls_without_or_with_wrong_token_are_refused(shared, method, path, body):
    for headers in ({}, {"Authorization": "Bearer not-the-token"}, {"Authorization": f"Bearer {shared.sync_token}"}):
        status, answer = http_json(shared.origin.url, method, path, body, headers)
        assert status == 401, (headers, answer)
        assert answer["error"]["code"] == "unauthorized"
    status, _ = http_json(shared.origin.url, "GET", "/v1/admin/offers/o1")
    assert status == 401


def test_sync_calls_need_the_sync_token_not_the_admin_token(shared):
    assert _sync(shared, "/v1/sync/snapshot?regions=GB")[0] == 200
    assert _sync(shared, "/v1/sync/snapshot?regions=GB", token=shared.admin_token)[0] == 401
    status, _, _ = http_call(shared.origin.url, "GET", "/v1/sync/snapshot?regions=GB")
    assert status == 401


@pytest.mark.parametrize(
    "offer,field",
    [
        ({"sku": "1", "title": "t", "price": -1, "currency": "GBP", "regions": ["GB"]}, "price"),
        ({"sku": "1", "title": "t", "price": 1, "currency": "pounds", "regions": ["GB"]}, "currency"),
        ({"sku": "1", "title": "t", "price": 1, "currency": "GBP", "regions": []}, "regions"),
        ({"sku": "1", "title": "t", "price": 1, "currency": "GBP", "regions": ["GB"], "stock": "many"}, "stock"),
        ({"sku": "1", "title": "t", "price": 1, "currency": "GBP", "regions": ["GB"], "colour": "red"}, "colour"),
        (
            {
                "sku": "1",
                "title": "t",
                "price": 1,
                "currency": "GBP",
                "regions": ["GB"],
                "active_from": "2030-01-02",
                "active_to": "2030-01-01",
            },
            "active_to",
        ),
        ({"id": "other", "sku": "1", "title": "t", "price": 1, "currency": "GBP", "regions": ["GB"]}, "id"),
    ],
)
def test_invalid_offers_are_refused_with_the_field_named(shared, offer, field):
    status, answer = http_json(
        shared.origin.url, "PUT", "/v1/admin/offers/o1", offer, {"Authorization": f"Bearer {shared.admin_token}"}
    )
    assert status == 422
    assert field in answer["error"]["message"]


def test_not_json_and_unknown_routes_get_json_errors(shared):
    auth = {"Authorization": f"Bearer {shared.admin_token}", "Content-Type": "application/json"}
    status, _, raw = http_call(shared.origin.url, "PUT", "/v1/admin/offers/o1", b"{nope", auth)
    assert status == 400 and "JSON" in json.loads(raw)["error"]["message"]
    status, _, raw = http_call(shared.origin.url, "GET", "/nowhere")
    assert status == 404 and json.loads(raw)["error"]


def test_every_change_gets_the_next_version_and_deletes_are_logged(shared):
    v1 = shared.put_offer(make_offer("o1", "10001"))["data_version"]
    v2 = shared.put_offer(make_offer("o1", "10001", price=5.0))["data_version"]
    status, answer = http_json(
        shared.origin.url, "DELETE", "/v1/admin/offers/o1", None, {"Authorization": f"Bearer {shared.admin_token}"}
    )
    assert status == 200 and v1 < v2 < answer["data_version"]
    status, _, raw = _sync(shared, f"/v1/sync/deltas?regions=GB&since={v1}")
    batch = _opened(shared, raw)
    assert [c["op"] for c in batch["changes"]] == ["offer_upsert", "offer_delete"]
    assert batch["changes"][0]["offer"]["price"] == 5.0
    status, answer = http_json(
        shared.origin.url, "DELETE", "/v1/admin/offers/o1", None, {"Authorization": f"Bearer {shared.admin_token}"}
    )
    assert status == 404


def test_deltas_are_scoped_to_the_edge_regions(shared):
    base = _opened(shared, _sync(shared, "/v1/sync/snapshot?regions=DE")[2], "snapshot")["version"]
    shared.put_offer(make_offer("gb-only", "10001", region="GB"))
    shared.put_offer(make_offer("de-only", "10002", region="DE", currency="EUR"))
    batch = _opened(shared, _sync(shared, f"/v1/sync/deltas?regions=DE&since={base}")[2])
    assert [c["offer"]["id"] for c in batch["changes"]] == ["de-only"]
    # An offer that leaves a region is still announced there, so that the edge drops it.
    shared.put_offer(make_offer("de-only", "10002", region="FR", currency="EUR"))
    batch = _opened(shared, _sync(shared, f"/v1/sync/deltas?regions=DE&since={batch['to']}")[2])
    assert [c["offer"]["regions"] for c in batch["changes"]] == [["FR"]]


def test_long_poll_returns_as_soon_as_something_changes(shared):
    head = _opened(shared, _sync(shared, "/v1/sync/snapshot?regions=GB")[2], "snapshot")["version"]
    timer = threading.Timer(0.5, lambda: shared.put_offer(make_offer("o9", "10009")))
    started = time.monotonic()
    timer.start()
    status, _, raw = _sync(shared, f"/v1/sync/deltas?regions=GB&since={head}&wait=20")
    elapsed = time.monotonic() - started
    timer.join()
    assert status == 200
    assert [c["offer"]["id"] for c in _opened(shared, raw)["changes"]] == ["o9"]
    assert 0.4 < elapsed < 5, elapsed


def test_long_poll_with_nothing_new_answers_empty_after_the_wait(shared):
    head = _opened(shared, _sync(shared, "/v1/sync/snapshot?regions=GB")[2], "snapshot")["version"]
    started = time.monotonic()
    batch = _opened(shared, _sync(shared, f"/v1/sync/deltas?regions=GB&since={head}&wait=0.5")[2])
    assert batch["changes"] == [] and batch["to"] == head
    assert time.monotonic() - started >= 0.45


def test_an_edge_ahead_of_the_origin_is_told_to_resync(shared):
    status, _, raw = _sync(shared, "/v1/sync/deltas?regions=GB&since=999999")
    assert status == 409 and json.loads(raw)["error"]["code"] == "ahead_of_origin"


def test_a_bundle_whose_bytes_do_not_match_its_manifest_is_refused(cluster, bundle_dir):
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    model = bytearray((bundle_dir / "model.onnx").read_bytes())
    model[len(model) // 2] ^= 0xFF
    body = msgpack.packb({"manifest": manifest, "model": bytes(model)})
    status, _, raw = http_call(
        cluster.origin.url,
        "POST",
        "/v1/admin/models",
        body,
        {"Authorization": f"Bearer {cluster.admin_token}", "Content-Type": "application/x-msgpack"},
    )
    assert status == 422, raw
    status, answer = http_json(
        cluster.origin.url, "GET", "/v1/admin/models", None, {"Authorization": f"Bearer {cluster.admin_token}"}
    )
    assert answer["models"] == []


def test_a_published_model_can_be_rolled_back_to_and_reactivating_the_active_one_changes_nothing(
    cluster, second_bundle_dir
):
    first = cluster.publish()
    # A second model (trained on other data, so another version), published and so activated after the first.
    second = cluster.publish(second_bundle_dir)
    assert second["model_version"] != first["model_version"]
    auth = {"Authorization": f"Bearer {cluster.admin_token}"}
    status, answer = http_json(
        cluster.origin.url, "POST", f"/v1/admin/models/{first['model_version']}/activate", None, auth
    )
    assert status == 200 and answer["data_version"] == second["data_version"] + 1 and answer["changed"] is True
    # Activating the model already active appends no change: same data version, no delta, no edge rebuild.
    status, answer = http_json(
        cluster.origin.url, "POST", f"/v1/admin/models/{first['model_version']}/activate", None, auth
    )
    assert status == 200 and answer == {
        "model_version": first["model_version"],
        "data_version": second["data_version"] + 1,
        "changed": False,
        "message": f"model {first['model_version']} is already active; nothing changed",
    }
    assert (
        http_json(cluster.origin.url, "GET", "/v1/admin/status", None, auth)[1]["data_version"]
        == second["data_version"] + 1
    )
    assert (
        _opened(cluster, _sync(cluster, f"/v1/sync/deltas?regions=GB&since={answer['data_version']}")[2])["changes"]
        == []
    )
    status, answer = http_json(cluster.origin.url, "POST", "/v1/admin/models/nope/activate", None, auth)
    assert status == 404 and answer["error"]["code"] == "not_found"


def test_an_experiment_naming_an_unknown_model_is_refused_422_even_where_it_would_overlap(shared):
    auth = {"Authorization": f"Bearer {shared.admin_token}"}

    def put_gb_experiment(name: str, variant_b: dict):
        experiment = {"variants": [{"name": "a"}, {"name": "b", **variant_b}], "regions": ["GB"]}
        return http_json(shared.origin.url, "PUT", f"/v1/admin/experiments/{name}", experiment, auth)

    status, _ = put_gb_experiment("gb-1", {})
    assert status == 200
    status, answer = put_gb_experiment("gb-2", {"model": "m-unknown"})
    assert status == 422 and answer["error"]["code"] == "invalid_experiment", answer
    assert "m-unknown" in answer["error"]["message"]
    # A valid body that overlaps is still refused for the overlap.
    status, answer = put_gb_experiment("gb-2", {})
    assert status == 409 and answer["error"]["code"] == "experiment_overlap", answer


def test_readyz_answers_without_auth_when_the_store_answers_and_a_key_is_loaded(cluster):
    status, answer = http_json(cluster.origin.url, "GET", "/readyz")
    assert status == 200 and answer["ready"] is True, answer
    assert answer["data_version"] == 0 and len(answer["key_id"]) == 16
    cluster.put_offer(make_offer("o1", "10001"))
    assert http_json(cluster.origin.url, "GET", "/readyz")[1]["data_version"] == 1


class CuttableTcpProxy:
    """A TCP forwarder in front of PostgreSQL that a test can cut (listener and every connection closed: the
    database is unreachable, connections refused) and restore on the same port."""

    def __init__(self, target: tuple[str, int]) -> None:
        import socket

        self.target = target
        self.port = free_port()
        self._socket = socket
        self._listener = None
        self._connections: list = []
        self._lock = threading.Lock()

    def start(self) -> CuttableTcpProxy:
        listener = self._socket.socket()
        listener.setsockopt(self._socket.SOL_SOCKET, self._socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def _accept(self, listener) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = self._socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._connections += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source, sink) -> None:
        import socket

        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:  # one side closed: close both (shutdown first, which wakes the other pump's recv)
            for s in (source, sink):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()

    def cut(self) -> None:
        import socket

        try:
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread; close alone would not
        except OSError:
            pass
        self._listener.close()
        with self._lock:
            connections, self._connections = self._connections, []
        for s in connections:
            try:
                s.shutdown(socket.SHUT_RDWR)
                s.close()
            except OSError:
                pass


def test_readyz_says_503_while_the_postgresql_database_is_unreachable_and_200_once_it_is_back(tmp_path, pg_schema):
    from urllib.parse import urlsplit

    from tests.conftest import PG_DSN, wait_until

    pg = urlsplit(PG_DSN)
    proxy = CuttableTcpProxy((pg.hostname, pg.port or 5432)).start()
    dsn = f"{pg.scheme}://{pg.netloc.rsplit('@', 1)[0]}@127.0.0.1:{proxy.port}{pg.path}?search_path={pg_schema.name}"
    origin = origin_service(tmp_path, free_port(), "a" * 32, "s" * 32, dsn=dsn)
    origin.start()
    try:
        origin.wait_ready("/readyz")
        status, answer = http_json(origin.url, "GET", "/readyz")
        assert status == 200 and answer["ready"] is True and answer["data_version"] == 0, answer
        proxy.cut()

        def not_ready() -> dict | None:
            status, body = http_json(origin.url, "GET", "/readyz")
            return body if status == 503 else None

        answer = wait_until(not_ready, timeout_s=20, what="/readyz to answer 503")
        assert answer["ready"] is False and answer["reason"].startswith("store: "), answer
        assert set(answer) == {"ready", "reason"} and "5432" not in answer["reason"]  # no address to anyone asking
        for _ in range(3):
            assert http_json(origin.url, "GET", "/readyz")[0] == 503
        assert http_json(origin.url, "GET", "/healthz")[0] == 200  # alive, just not ready
        proxy.start()  # the database is reachable again: the pool reconnects
        wait_until(lambda: http_json(origin.url, "GET", "/readyz")[0] == 200, timeout_s=30, what="ready again")
        log = origin.log_path.read_text()
        assert log.count("origin not ready") == 1 and "origin ready again" in log  # once, not on every probe
        origin.stop()
        assert origin.process.returncode == 0, origin.log_tail()  # and it still stops cleanly
    finally:
        origin.stop()
        proxy.cut()


def _metric(cluster, name: str) -> float:
    _, _, raw = http_call(cluster.origin.url, "GET", "/metrics")
    for line in raw.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_unattributed_feedback_no_impression_explains_is_counted_at_ingest(cluster):
    from origin_sync.wire.events import encode_batch

    def event(kind: str, request_id: str) -> dict:
        return {
            "id": f"{kind}-{request_id}-{time.monotonic_ns()}",
            "kind": kind,
            "ts": time.time(),
            "region": "GB",
            "request_id": request_id,
            "shopper": None,
            "experiment": None,
            "variant": None,
            "offer_ids": ["o"],
            "value": 1.0 if kind == "purchase" else None,
            "currency": "GBP" if kind == "purchase" else None,
            "model_version": None,
            "data_version": None,
            "slot": None,
        }

    headers = {"Authorization": f"Bearer {cluster.region_tokens['GB']}", "Content-Type": "application/x-msgpack"}

    def ship(batch_id: str, events: list[dict]) -> None:
        status, _, raw = http_call(
            cluster.origin.url, "POST", "/v1/sync/events", encode_batch(batch_id, ["GB"], events), headers
        )
        assert status == 200, raw

    # Explained by an impression of the same batch, or of an earlier one: not counted.
    ship("b1", [event("impression", "seen-1"), event("click", "seen-1"), event("impression", "seen-2")])
    ship("b2", [event("purchase", "seen-2"), event("add_to_cart", "seen-1")])
    # Never seen: counted per kind, once (a retried batch is not counted again).
    unknown = [event("click", "never-1"), event("click", "never-2"), event("purchase", "never-1")]
    ship("b3", unknown)
    ship("b3", unknown)
    name = "edgerec_origin_events_unattributed_total"
    assert _metric(cluster, f'{name}{{kind="click"}}') == 2.0
    assert _metric(cluster, f'{name}{{kind="purchase"}}') == 1.0
    assert _metric(cluster, f'{name}{{kind="add_to_cart"}}') == 0.0


def test_a_region_token_syncs_its_own_region_only(shared):
    gb = shared.region_tokens["GB"]
    assert _sync(shared, "/v1/sync/snapshot?regions=GB", token=gb)[0] == 200
    status, _, raw = _sync(shared, "/v1/sync/snapshot?regions=DE", token=gb)
    assert status == 403 and json.loads(raw)["error"]["code"] == "forbidden_region"
    assert _sync(shared, "/v1/sync/deltas?regions=DE,GB&since=0", token=gb)[0] == 403
    # A region token is no admin credential.
    status, _ = http_json(shared.origin.url, "GET", "/v1/admin/models", None, {"Authorization": f"Bearer {gb}"})
    assert status == 401


def test_an_edge_of_another_protocol_version_is_told_so(shared):
    status, _, raw = http_call(
        shared.origin.url,
        "GET",
        "/v1/sync/deltas?regions=GB&since=0",
        headers={"Authorization": f"Bearer {shared.sync_token}", "X-Edgerec-Protocol": "1"},
    )
    assert status == 409 and json.loads(raw)["error"]["code"] == "protocol_mismatch"


def test_large_payloads_travel_compressed_and_signed(cluster, catalog_skus):
    for i, sku in enumerate(catalog_skus[:40]):
        cluster.put_offer(make_offer(f"o{i}", sku))
    status, _, raw = _sync(cluster, "/v1/sync/snapshot?regions=GB")
    envelope = msgpack.unpackb(raw)
    assert status == 200 and envelope["encoding"] == "zlib" and len(envelope["sig"]) == 64
    assert len(_opened(cluster, raw, "snapshot")["offers"]) == 40


def test_a_compacted_log_answers_410_and_the_snapshot_still_serves(cluster):
    for i in range(5):
        cluster.put_offer(make_offer(f"o{i}", "10001"))
    auth = {"Authorization": f"Bearer {cluster.admin_token}"}
    status, answer = http_json(cluster.origin.url, "POST", "/v1/admin/compact?keep_versions=2", None, auth)
    assert status == 200 and answer["compaction_floor"] == 3
    status, _, raw = _sync(cluster, "/v1/sync/deltas?regions=GB&since=1")
    assert status == 410 and json.loads(raw)["error"]["code"] == "compacted"
    batch = _opened(cluster, _sync(cluster, "/v1/sync/deltas?regions=GB&since=3")[2])
    assert [c["version"] for c in batch["changes"]] == [4, 5]
    assert len(_opened(cluster, _sync(cluster, "/v1/sync/snapshot?regions=GB")[2], "snapshot")["offers"]) == 5


def test_no_token_or_key_appears_in_the_origin_log(shared):
    shared.put_offer(make_offer("o1", "10001"))
    _sync(shared, "/v1/sync/snapshot?regions=GB")
    _sync(shared, "/v1/sync/snapshot?regions=DE", token=shared.region_tokens["GB"])
    http_json(shared.origin.url, "GET", "/v1/admin/models", None, {"Authorization": "Bearer wrong-token-123456"})
    log_text = shared.origin.log_path.read_text()
    private_pem = ensure_signing_keys(shared.workdir)[0].read_text()
    secrets = [shared.admin_token, shared.sync_token, *shared.region_tokens.values(), "wrong-token-123456"]
    assert "origin listening" in log_text
    assert not [s for s in secrets if s in log_text]
    assert private_pem.splitlines()[1] not in log_text
