"""Offers through the admin API and the command line: a partial PUT names what is missing, PATCH is a JSON merge
patch (RFC 7396), POST /v1/admin/offers upserts a batch, and `edgerec offers import` loads CSV and JSON-lines files.
The store's batch and update on both backends; the API and the CLI against real origin processes."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import pytest

from edgerec.cli.process import free_port, http_call, http_json
from edgerec.cli.services import origin_service
from origin_sync.origin.store import ChangeLogStore, NotFound
from origin_sync.wire.offers import InvalidOffer, validate_offer
from origin_sync.wire.protocol import unpack
from tests.cli_support import assert_one_line_error, run_cli
from tests.conftest import make_offer
from tests.store_support import BACKENDS, run_on_store


@pytest.mark.parametrize("kind", BACKENDS)
def test_a_batch_writes_only_what_changed_in_one_transaction(kind, tmp_path, request):
    async def scenario(store: ChangeLogStore) -> None:
        await store.upsert_offer(validate_offer(make_offer("a", "10001")))
        batch = [
            validate_offer(o)
            for o in (
                make_offer("a", "10001"),
                make_offer("b", "10002"),
                make_offer("c", "10003", region="DE"),
                make_offer("b", "10002", price=1.5, region="FR"),
            )
        ]
        assert await store.upsert_offers(batch) == (4, ["unchanged", "created", "created", "changed"])
        page = await store.changes_since(1, ("GB",))
        # b's move from GB to FR reaches GB's edges; the unchanged "a" wrote nothing.
        assert [(unpack(c["body"])["version"], unpack(c["body"])["offer"]["id"]) for c in page.changes] == [
            (2, "b"),
            (4, "b"),
        ]
        assert (await store.offer("b"))["regions"] == ["FR"]
        assert await store.upsert_offers([validate_offer(make_offer("a", "10001"))]) == (4, ["unchanged"])
        await store.verify_chain()

    run_on_store(kind, tmp_path, request, scenario)


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

    run_on_store(kind, tmp_path, request, scenario)


# -- the admin API -----------------------------------------------------------------------------------------------


def _auth(cluster) -> dict[str, str]:
    return {"Authorization": f"Bearer {cluster.admin_token}"}


def _patch(cluster, offer_id: str, patch, content_type: str = "application/merge-patch+json"):
    status, _, raw = http_call(
        cluster.origin.url,
        "PATCH",
        f"/v1/admin/offers/{offer_id}",
        json.dumps(patch).encode(),
        {**_auth(cluster), "Content-Type": content_type},
    )
    return status, json.loads(raw)


def test_a_partial_put_names_every_missing_required_field(module_cluster):
    cluster = module_cluster  # refusals only: nothing is written
    status, body = http_json(
        cluster.origin.url, "PUT", "/v1/admin/offers/o1", {"sku": "10001", "price": None}, _auth(cluster)
    )
    assert status == 422 and body["error"]["code"] == "invalid_offer"
    assert body["error"]["message"].startswith("missing required field(s): title, price, currency, regions ")
    status, body = http_json(cluster.origin.url, "PUT", "/v1/admin/offers/o1", {}, _auth(cluster))
    assert (
        status == 422 and "missing required field(s): sku, title, price, currency, regions" in body["error"]["message"]
    )


def test_patch_merges_resets_with_null_and_validates_the_result_whole(module_cluster):
    cluster = module_cluster
    offer = make_offer("p1", "10001", group="mugs", boost=2.0, stock=7)
    put = cluster.put_offer(offer)
    status, body = _patch(cluster, "p1", {"price": 4.5, "regions": ["GB", "DE"], "group": None, "stock": None})
    assert status == 200, body
    assert body["data_version"] == put["data_version"] + 1
    assert body["offer"] == {**validate_offer(offer), "price": 4.5, "regions": ["DE", "GB"], "group": None, "stock": 0}
    status, stored = http_json(cluster.origin.url, "GET", "/v1/admin/offers/p1", None, _auth(cluster))
    assert stored["offer"] == body["offer"]
    # A patch that changes nothing writes nothing.
    status, again = _patch(cluster, "p1", {"price": 4.5})
    assert status == 200 and again["data_version"] == body["data_version"]

    for patch, needle in (
        ({"title": None}, "missing required field(s): title"),
        ({"price": -1}, "price"),
        ({"colour": "red"}, "unknown field(s): colour"),
        ({"id": "p2"}, "id"),
        ({"active_from": "2030-01-02", "active_to": "2030-01-01"}, "active_to"),
    ):
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
    status, _, raw = http_call(
        cluster.origin.url,
        "PATCH",
        "/v1/admin/offers/p1",
        b"{nope",
        {**_auth(cluster), "Content-Type": "application/merge-patch+json"},
    )
    assert status == 400 and json.loads(raw)["error"]["code"] == "invalid_json"
    status, _, _ = http_call(
        cluster.origin.url, "PATCH", "/v1/admin/offers/p1", b"{}", {"Content-Type": "application/merge-patch+json"}
    )
    assert status == 401


def test_a_batch_reports_each_offer_and_refuses_a_bad_request(module_cluster):
    cluster = module_cluster
    cluster.put_offer(make_offer("b1", "10001"))
    offers = [
        make_offer("b1", "10001"),
        make_offer("b2", "10002"),
        {"id": "b3", "sku": "10003"},
        make_offer("b1", "10001", price=1.0),
        "not an offer",
    ]
    status, body = http_json(cluster.origin.url, "POST", "/v1/admin/offers", {"offers": offers}, _auth(cluster))
    assert status == 200, body
    assert [(r["id"], r["status"]) for r in body["results"]] == [
        ("b1", "unchanged"),
        ("b2", "created"),
        ("b3", "refused"),
        ("b1", "changed"),
        (None, "refused"),
    ]
    assert "missing required field(s): title, price" in body["results"][2]["error"]
    assert body["counts"] == {"created": 1, "changed": 1, "unchanged": 1, "refused": 2}
    for bad in ({"offers": []}, {"offers": [make_offer("x", "1")] * 1001}, [make_offer("x", "1")]):
        status, body = http_json(cluster.origin.url, "POST", "/v1/admin/offers", bad, _auth(cluster))
        assert status == 422 and body["error"]["code"] == "invalid_request"


# -- edgerec offers import ------------------------------------------------------------------------------------------


def _import(cluster, path: Path, *args: str, origin: str | None = None, admin_token: str | None = None):
    """`edgerec offers import PATH ARGS` against the cluster's origin with its admin token, unless told others."""
    return run_cli(
        "offers",
        "import",
        str(path),
        "--origin",
        origin or cluster.origin.url,
        *args,
        admin_token=admin_token or cluster.admin_token,
    )


def _stored(cluster, offer_id: str) -> dict | None:
    status, body = http_json(cluster.origin.url, "GET", f"/v1/admin/offers/{offer_id}", None, _auth(cluster))
    return body["offer"] if status == 200 else None


def test_a_csv_import_reports_created_changed_unchanged_and_refused_lines(module_cluster, tmp_path):
    cluster = module_cluster
    cluster.put_offer(make_offer("c-known", "10001", price=3.0))
    path = tmp_path / "offers.csv"
    path.write_text(
        "id,sku,title,price,currency,regions,stock,group,boost,active_from\n"  # line 1
        "c-1,10001,Mug,2.5,GBP,GB|de,12,mugs,,\n"  # 2: created, regions upper-cased
        'c-2,10002,"A title\nover two lines",4,EUR,DE,,,1.5,2030-01-01T00:00:00Z\n'  # 3-4: created
        "c-known,10001,Item 10001,3.0,GBP,GB,10,,,\n"  # 5: unchanged (see make_offer)
        "\n"  # 6: blank, skipped
        "c-3,10003,Bad price,cheap,GBP,GB,,,,\n"  # 7: refused
        "c-4,10004,,1,GBP,GB,,,,\n"  # 8: refused (no title)
        "c-5,10005,Too few cells\n"  # 9: refused
        "c-known,10001,Item 10001,3.5,GBP,GB,10,,,\n"
    )  # 10: changed
    result = _import(cluster, path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"{path}: 7 offers: 2 created, 1 changed, 1 unchanged, 3 refused (data version " in result.stdout
    refused = [line for line in result.stdout.splitlines() if line.startswith("  line ")]
    assert refused[0].startswith("  line 7 (offer c-3): refused: price: a finite number"), refused
    assert refused[1].startswith("  line 8 (offer c-4): refused: missing required field(s): title"), refused
    assert refused[2] == "  line 9: refused: 3 cells, the header has 10", refused
    assert len(refused) == 3
    # stderr: the progress bar, then the one line of the refusal.
    assert result.stderr.strip().splitlines()[-1] == "edgerec: offers import: 3 of 7 lines refused (listed above)"
    assert "7/7" in result.stderr and "Traceback" not in result.stderr
    first, second = _stored(cluster, "c-1"), _stored(cluster, "c-2")
    assert first["regions"] == ["DE", "GB"] and first["stock"] == 12 and first["group"] == "mugs"
    assert first["boost"] == 0.0 and first["price"] == 2.5
    assert second["title"] == "A title\nover two lines" and second["stock"] == 0 and second["boost"] == 1.5
    assert second["active_from"] == 1893456000.0
    assert _stored(cluster, "c-known")["price"] == 3.5
    assert _stored(cluster, "c-3") is None and _stored(cluster, "c-4") is None

    fixed = tmp_path / "fixed.csv"
    fixed.write_text(
        "id,sku,title,price,currency,regions\nc-1,10001,Mug,2.5,GBP,GB|DE\nc-3,10003,Fixed price,1.25,GBP,GB\n"
    )
    result = _import(cluster, fixed, "--quiet")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 offers: 1 created, 1 changed, 0 unchanged, 0 refused" in result.stdout  # c-1 lost its stock and group
    assert result.stderr == ""


def test_a_jsonl_import_numbers_its_lines_and_refuses_what_is_not_an_offer(module_cluster, tmp_path):
    cluster = module_cluster
    path = tmp_path / "offers.jsonl"
    path.write_text(
        "\n".join(
            [
                json.dumps(make_offer("j-1", "10001")),
                "",
                "{not json",
                json.dumps(["a", "list"]),
                json.dumps({**make_offer("j-2", "10002"), "colour": "red"}),
                json.dumps(make_offer("j-3", "10003", region="FR", currency="EUR")),
            ]
        )
        + "\n"
    )
    result = _import(cluster, path)
    assert result.returncode == 1
    assert "5 offers: 2 created, 0 changed, 0 unchanged, 3 refused" in result.stdout, result.stdout
    refused = [line for line in result.stdout.splitlines() if line.startswith("  line ")]
    assert refused[0].startswith("  line 3: refused: not valid JSON")
    assert refused[1] == "  line 4: refused: not a JSON object"
    assert refused[2] == "  line 5 (offer j-2): refused: unknown field(s): colour"
    assert _stored(cluster, "j-3")["regions"] == ["FR"]


def test_an_import_that_cannot_start_says_why_in_one_line(module_cluster, tmp_path):
    cluster = module_cluster
    bad_header = tmp_path / "bad.csv"
    bad_header.write_text("id,sku,colour\nx-1,10001,red\n")
    assert_one_line_error(_import(cluster, bad_header), "unknown column(s) colour")
    no_id = tmp_path / "no-id.csv"
    no_id.write_text("sku,title\n10001,Mug\n")
    assert_one_line_error(_import(cluster, no_id), "no id column")
    assert_one_line_error(_import(cluster, tmp_path / "missing.csv"), "no such file")
    other = tmp_path / "offers.txt"
    other.write_text(json.dumps(make_offer("x-1", "10001")) + "\n")
    assert_one_line_error(_import(cluster, other), "--format")
    assert _import(cluster, other, "--format", "jsonl", "--quiet").returncode == 0
    good = tmp_path / "good.csv"
    good.write_text("id,sku,title,price,currency,regions\nx-2,10001,Mug,1,GBP,GB\n")
    assert_one_line_error(
        _import(cluster, good, "--quiet", admin_token="not-the-admin-token-123"), "HTTP 401", "after 0 of 1 offers sent"
    )
    unreachable = f"http://127.0.0.1:{free_port()}"
    assert_one_line_error(_import(cluster, good, "--quiet", origin=unreachable), "cannot reach the origin")
    assert _stored(cluster, "x-2") is None


def _big_catalog(path: Path, count: int) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "sku", "title", "price", "currency", "regions", "stock", "group"])
        for i in range(count):
            writer.writerow(
                [
                    f"GB-{i:05d}",
                    f"{10000 + i}",
                    f"Item number {i}",
                    f"{1 + i % 50}.99",
                    "GBP",
                    "GB" if i % 3 else "GB|DE",
                    i % 17,
                    f"g{i % 40}",
                ]
            )


@pytest.mark.parametrize("kind", BACKENDS)
def test_ten_thousand_offers_import_in_seconds_and_again_as_unchanged(kind, tmp_path, request):
    """A real origin on each backend; 10 000 offers in batches of 500, one transaction each."""
    import secrets

    dsn = request.getfixturevalue("pg_schema").dsn if kind == "postgres" else None
    admin = secrets.token_urlsafe(24)
    origin = origin_service(tmp_path, free_port(), admin, secrets.token_urlsafe(24), dsn=dsn).start()
    try:
        origin.wait_ready("/healthz")
        path = tmp_path / "catalog.csv"
        _big_catalog(path, 10_000)
        started = time.monotonic()
        result = run_cli("offers", "import", str(path), "--origin", origin.url, admin_token=admin)
        elapsed = time.monotonic() - started
        assert result.returncode == 0, result.stdout + result.stderr
        assert "10000 offers: 10000 created, 0 changed, 0 unchanged, 0 refused" in result.stdout
        assert "10000/10000" in result.stderr  # the progress bar reached the end
        print(f"{kind}: 10 000 offers imported in {elapsed:.1f} s")
        assert elapsed < 60, f"{elapsed:.1f} s"
        status, head = http_json(origin.url, "GET", "/v1/admin/status", None, {"Authorization": f"Bearer {admin}"})
        assert head["data_version"] == 10_000
        again = run_cli("offers", "import", str(path), "--origin", origin.url, "--quiet", admin_token=admin)
        assert "10000 offers: 0 created, 0 changed, 10000 unchanged, 0 refused" in again.stdout, again.stdout
        status, head = http_json(origin.url, "GET", "/v1/admin/status", None, {"Authorization": f"Bearer {admin}"})
        assert head["data_version"] == 10_000  # nothing written the second time
    finally:
        origin.stop()
