"""Offers through the admin API: a partial PUT names what is missing, PATCH is a JSON merge patch (RFC 7396), and
POST /v1/admin/offers upserts a batch. The store's batch and update on both backends; the API against a real origin."""

from __future__ import annotations

import asyncio
import json
import pytest

from edgerec.services import http_call, http_json
from origin_sync.protocol import InvalidOffer, unpack, validate_offer
from origin_sync.store import ChangeLogStore, NotFound, PostgresStore, SQLiteStore
from tests.conftest import PG_DSN, make_offer, needs_pg

BACKENDS = ["sqlite", pytest.param("postgres", marks=needs_pg)]


def _run(kind, tmp_path, request, scenario) -> None:
    schema = request.getfixturevalue("pg_schema").name if kind == "postgres" else None

    async def main() -> None:
        if schema is not None:
            store: ChangeLogStore = PostgresStore(PG_DSN, tmp_path / "blobs", schema=schema)
        else:
            store = SQLiteStore(tmp_path / "origin.db", tmp_path / "blobs")
        await store.open()
        try:
            await scenario(store)
        finally:
            await store.close()

    asyncio.run(main())


@pytest.mark.parametrize("kind", BACKENDS)
def test_a_batch_writes_only_what_changed_in_one_transaction(kind, tmp_path, request):
    async def scenario(store: ChangeLogStore) -> None:
        await store.upsert_offer(validate_offer(make_offer("a", "10001")))
        batch = [validate_offer(o) for o in (make_offer("a", "10001"), make_offer("b", "10002"),
                                             make_offer("c", "10003", region="DE"),
                                             make_offer("b", "10002", price=1.5, region="FR"))]
        assert await store.upsert_offers(batch) == (4, ["unchanged", "created", "created", "changed"])
        page = await store.changes_since(1, ("GB",))
        # b's move from GB to FR reaches GB's edges; the unchanged "a" wrote nothing.
        assert [(unpack(c["body"])["version"], unpack(c["body"])["offer"]["id"]) for c in page.changes] == \
            [(2, "b"), (4, "b")]
        assert (await store.offer("b"))["regions"] == ["FR"]
        assert await store.upsert_offers([validate_offer(make_offer("a", "10001"))]) == (4, ["unchanged"])
        await store.verify_chain()

    _run(kind, tmp_path, request, scenario)


@pytest.mark.parametrize("kind", BACKENDS)
def test_an_offer_update_is_atomic_and_a_refused_one_writes_nothing(kind, tmp_path, request):
    async def scenario(store: ChangeLogStore) -> None:
        await store.upsert_offer(validate_offer(make_offer("a", "10001")))
        version, offer = await store.update_offer("a", lambda o: {**o, "price": 2.0})
        assert version == 2 and offer["price"] == 2.0 and (await store.offer("a"))["price"] == 2.0
        assert await store.update_offer("a", lambda o: o) == (2, offer)  # no change, no version

        def refuse(_: dict) -> dict:
            raise InvalidOffer("price: a finite number >= 0")

        with pytest.raises(InvalidOffer):
            await store.update_offer("a", refuse)
        with pytest.raises(NotFound):
            await store.update_offer("nope", lambda o: o)
        assert (await store.head()).version == 2 and (await store.offer("a"))["price"] == 2.0
        await store.verify_chain()

    _run(kind, tmp_path, request, scenario)


# -- the admin API -----------------------------------------------------------------------------------------------

def _auth(cluster) -> dict[str, str]:
    return {"Authorization": f"Bearer {cluster.admin_token}"}


def _patch(cluster, offer_id: str, patch, content_type: str = "application/merge-patch+json"):
    status, _, raw = http_call(cluster.origin.url, "PATCH", f"/v1/admin/offers/{offer_id}",
                               json.dumps(patch).encode(), {**_auth(cluster), "Content-Type": content_type})
    return status, json.loads(raw)


def test_a_partial_put_names_every_missing_required_field(cluster):
    status, body = http_json(cluster.origin.url, "PUT", "/v1/admin/offers/o1", {"sku": "10001", "price": None},
                             _auth(cluster))
    assert status == 422 and body["error"]["code"] == "invalid_offer"
    assert body["error"]["message"].startswith("missing required field(s): title, price, currency, regions ")
    status, body = http_json(cluster.origin.url, "PUT", "/v1/admin/offers/o1", {}, _auth(cluster))
    assert status == 422 and "missing required field(s): sku, title, price, currency, regions" in \
        body["error"]["message"]


def test_patch_merges_resets_with_null_and_validates_the_result_whole(module_cluster):
    cluster = module_cluster
    offer = make_offer("p1", "10001", group="mugs", boost=2.0, stock=7)
    put = cluster.put_offer(offer)
    status, body = _patch(cluster, "p1", {"price": 4.5, "regions": ["GB", "DE"], "group": None, "stock": None})
    assert status == 200, body
    assert body["data_version"] == put["data_version"] + 1
    assert body["offer"] == {**validate_offer(offer), "price": 4.5, "regions": ["DE", "GB"], "group": None,
                             "stock": 0}
    status, stored = http_json(cluster.origin.url, "GET", "/v1/admin/offers/p1", None, _auth(cluster))
    assert stored["offer"] == body["offer"]
    # A patch that changes nothing writes nothing.
    status, again = _patch(cluster, "p1", {"price": 4.5})
    assert status == 200 and again["data_version"] == body["data_version"]

    for patch, needle in (({"title": None}, "missing required field(s): title"), ({"price": -1}, "price"),
                          ({"colour": "red"}, "unknown field(s): colour"), ({"id": "p2"}, "id"),
                          ({"active_from": "2030-01-02", "active_to": "2030-01-01"}, "active_to")):
        status, refused = _patch(cluster, "p1", patch)
        assert status == 422 and refused["error"]["code"] == "invalid_offer", (patch, refused)
        assert needle in refused["error"]["message"], (patch, refused)
    status, refused = _patch(cluster, "p1", ["not", "an", "object"])
    assert status == 422 and "JSON object" in refused["error"]["message"]
    status, stored_after = http_json(cluster.origin.url, "GET", "/v1/admin/offers/p1", None, _auth(cluster))
    assert stored_after["offer"] == body["offer"]  # every refusal left it as it was

    status, missing = _patch(cluster, "no-such-offer", {"price": 1})
    assert status == 404 and missing["error"]["code"] == "not_found"
    status, wrong_type = _patch(cluster, "p1", {"price": 1}, content_type="application/json")
    assert status == 415 and "application/merge-patch+json" in wrong_type["error"]["message"]
    status, _, raw = http_call(cluster.origin.url, "PATCH", "/v1/admin/offers/p1", b"{nope",
                               {**_auth(cluster), "Content-Type": "application/merge-patch+json"})
    assert status == 400 and json.loads(raw)["error"]["code"] == "invalid_json"
    status, _, _ = http_call(cluster.origin.url, "PATCH", "/v1/admin/offers/p1", b"{}",
                             {"Content-Type": "application/merge-patch+json"})
    assert status == 401


def test_a_batch_reports_each_offer_and_refuses_a_bad_request(module_cluster):
    cluster = module_cluster
    cluster.put_offer(make_offer("b1", "10001"))
    offers = [make_offer("b1", "10001"), make_offer("b2", "10002"), {"id": "b3", "sku": "10003"},
              make_offer("b1", "10001", price=1.0), "not an offer"]
    status, body = http_json(cluster.origin.url, "POST", "/v1/admin/offers", {"offers": offers}, _auth(cluster))
    assert status == 200, body
    assert [(r["id"], r["status"]) for r in body["results"]] == \
        [("b1", "unchanged"), ("b2", "created"), ("b3", "refused"), ("b1", "changed"), (None, "refused")]
    assert "missing required field(s): title, price" in body["results"][2]["error"]
    assert body["counts"] == {"created": 1, "changed": 1, "unchanged": 1, "refused": 2}
    for bad in ({"offers": []}, {"offers": [make_offer("x", "1")] * 1001}, [make_offer("x", "1")]):
        status, body = http_json(cluster.origin.url, "POST", "/v1/admin/offers", bad, _auth(cluster))
        assert status == 422 and body["error"]["code"] == "invalid_request"
