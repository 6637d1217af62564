"""Model states (published, candidate, active, retired): the store on both backends (and its migration of older
databases), the admin API, and `edgerec model publish|list|activate` against a real origin."""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
from pathlib import Path
from typing import Callable

import msgpack
import pytest

from edgerec.cli.process import free_port, http_call, http_json
from edgerec.cli.services import ensure_signing_keys
from origin_sync.origin.store import ChangeLogStore, PostgresStore, SQLiteStore, UnservableModel
from origin_sync.wire.experiments import validate_experiment
from origin_sync.wire.protocol import unpack
from origin_sync.wire.signing import Verifier, open_envelope
from tests.cli_support import assert_one_line_error, in_parallel, run_cli
from tests.conftest import PG_DSN, needs_pg
from tests.store_support import BACKENDS, run_on_store


def _bundle(version: str) -> tuple[dict, bytes]:
    """A manifest and model bytes that agree (the store checks the hash; the origin's server checks the rest)."""
    data = f"model bytes of {version}".encode()
    return {"version": version, "sha256": hashlib.sha256(data).hexdigest()}, data


def _states(models: list[dict]) -> dict[str, str]:
    return {m["version"]: m["state"] for m in models}


@pytest.mark.parametrize("kind", BACKENDS)
def test_only_activation_reaches_the_log_and_activating_retires_the_active_model(kind, tmp_path, request):
    async def scenario(store: ChangeLogStore) -> None:
        assert await store.publish_model(*_bundle("m1"), state="published") == (0, "published")
        assert await store.publish_model(*_bundle("m2"), state="candidate") == (0, "candidate")
        assert (await store.snapshot(("GB",)))["model"] is None  # nothing is served, nothing was logged
        assert await store.publish_model(*_bundle("m3"), state="active") == (1, "active")
        assert (await store.snapshot(("GB",)))["model"]["version"] == "m3"
        assert await store.activate_model("m1") == (2, True)
        models = await store.models()
        assert _states(models) == {"m1": "active", "m2": "candidate", "m3": "retired"}
        assert [m["active"] for m in models] == [True, False, False]
        page = await store.changes_since(0, ("GB",))
        assert [(unpack(c["body"])["op"], unpack(c["body"])["model"]["version"]) for c in page.changes] == [
            ("model_activate", "m3"),
            ("model_activate", "m1"),
        ]
        # Publishing again: idempotent, promotes to candidate or active, never demotes.
        assert await store.publish_model(*_bundle("m3"), state="candidate") == (2, "candidate")
        assert await store.publish_model(*_bundle("m1"), state="published") == (2, "active")
        assert await store.publish_model(*_bundle("m2"), state="active") == (3, "active")
        assert _states(await store.models()) == {"m1": "retired", "m2": "active", "m3": "candidate"}
        with pytest.raises(ValueError, match="other bytes"):
            await store.publish_model(
                {"version": "m1", "sha256": hashlib.sha256(b"x").hexdigest()}, b"x", state="candidate"
            )
        with pytest.raises(ValueError, match="published, candidate, active"):
            await store.publish_model(*_bundle("m4"), state="retired")
        await store.verify_chain()

    run_on_store(kind, tmp_path, request, scenario)


@pytest.mark.parametrize("kind", BACKENDS)
def test_an_experiment_may_name_a_candidate_or_retired_model_but_not_a_merely_published_one(kind, tmp_path, request):
    def experiment(model: str, region: str = "GB") -> dict:
        return validate_experiment(
            {"id": model, "regions": [region], "variants": [{"name": "control"}, {"name": "new", "model": model}]}
        )

    async def scenario(store: ChangeLogStore) -> None:
        await store.publish_model(*_bundle("pub"), state="published")
        await store.publish_model(*_bundle("cand"), state="candidate")
        await store.publish_model(*_bundle("old"), state="active")
        await store.publish_model(*_bundle("now"), state="active")  # retires "old"
        head = (await store.head()).version
        with pytest.raises(UnservableModel, match="'pub' is only published"):
            await store.upsert_experiment(experiment("pub"))
        assert (await store.head()).version == head  # refused inside the transaction: no gap
        for model, region in (("cand", "GB"), ("old", "DE")):
            await store.upsert_experiment(experiment(model, region))
            assert (await store.experiment(model))["variants"][1]["model_ref"]["version"] == model

    run_on_store(kind, tmp_path, request, scenario)


async def _open_old_database_twice(make_store: Callable[[], ChangeLogStore]) -> None:
    """Open a database of three models from before model states: the active one is `active`, the others
    `retired`; a publish is stored as published. A second open finds the column and leaves the states alone."""
    for _ in range(2):
        store = make_store()
        await store.open()
        try:
            states = _states(await store.models())
            assert {v: states[v] for v in ("m1", "m2", "m3")} == {"m1": "retired", "m2": "active", "m3": "retired"}
            await store.publish_model(*_bundle("m4"), state="published")
        finally:
            await store.close()


def test_a_sqlite_database_from_before_model_states_is_migrated(tmp_path):
    """The tables as they were: every publish activated, so the active model is `active` and the others `retired`."""
    db = sqlite3.connect(tmp_path / "origin.db")
    db.executescript("""
        CREATE TABLE models (version TEXT PRIMARY KEY, sha256 TEXT NOT NULL, manifest TEXT NOT NULL,
                             created_at REAL NOT NULL);
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        INSERT INTO models VALUES ('m1', 'aa', '{}', 1.0), ('m2', 'bb', '{}', 2.0), ('m3', 'cc', '{}', 3.0);
        INSERT INTO meta VALUES ('active_model', 'm2');
    """)
    db.close()

    async def scenario() -> None:
        await _open_old_database_twice(lambda: SQLiteStore(tmp_path / "origin.db", tmp_path / "blobs"))
        assert sqlite3.connect(tmp_path / "origin.db").execute(
            "SELECT state FROM models WHERE version = 'm4'"
        ).fetchone() == ("published",)

    asyncio.run(scenario())


@needs_pg
def test_a_postgresql_database_from_before_model_states_is_migrated(tmp_path, pg_schema):
    import asyncpg

    async def scenario() -> None:
        conn = await asyncpg.connect(PG_DSN, server_settings={"search_path": pg_schema.name})
        try:
            await conn.execute("""
                CREATE TABLE models (version TEXT PRIMARY KEY, sha256 TEXT NOT NULL, manifest TEXT NOT NULL,
                                     created_at DOUBLE PRECISION NOT NULL);
                CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
                INSERT INTO models VALUES ('m1', 'aa', '{}', 1.0), ('m2', 'bb', '{}', 2.0), ('m3', 'cc', '{}', 3.0);
                INSERT INTO meta VALUES ('active_model', 'm2');
            """)
        finally:
            await conn.close()
        await _open_old_database_twice(lambda: PostgresStore(PG_DSN, tmp_path / "blobs", schema=pg_schema.name))
        conn = await asyncpg.connect(PG_DSN, server_settings={"search_path": pg_schema.name})
        try:
            column = await conn.fetchrow(
                "SELECT is_nullable, column_default FROM information_schema.columns WHERE "
                "table_schema = $1 AND table_name = 'models' AND column_name = 'state'",
                pg_schema.name,
            )
            assert column["is_nullable"] == "NO" and "published" in column["column_default"]
            assert await conn.fetchval("SELECT state FROM models WHERE version = 'm4'") == "published"
        finally:
            await conn.close()

    asyncio.run(scenario())


# -- the admin API and the command line, against a real origin -----------------------------------------------------


def _version(bundle: Path) -> str:
    return json.loads((bundle / "manifest.json").read_text())["version"]


def _served_model(cluster) -> str | None:
    """The model version an edge would serve: the one in a signed snapshot."""
    status, _, raw = http_call(
        cluster.origin.url,
        "GET",
        "/v1/sync/snapshot?regions=GB",
        headers={"Authorization": f"Bearer {cluster.sync_token}"},
    )
    assert status == 200
    snap = open_envelope(raw, "snapshot", Verifier.from_config(str(ensure_signing_keys(cluster.workdir)[1])))
    return snap["model"]["version"] if snap["model"] else None


def _cli(cluster, *args: str):
    return run_cli(*args, "--origin", cluster.origin.url, admin_token=cluster.admin_token)


def test_publish_stores_without_serving_until_activated_and_list_shows_every_state(
    cluster, bundle_dir, second_bundle_dir
):
    first, second = _version(bundle_dir), _version(second_bundle_dir)
    result = _cli(cluster, "model", "publish", str(bundle_dir))
    assert result.returncode == 0, result.stderr
    assert f"model {first} stored as published: no edge serves it" in result.stdout
    assert _served_model(cluster) is None

    result = _cli(cluster, "model", "publish", str(second_bundle_dir), "--candidate")
    assert result.returncode == 0 and f"model {second} stored as a candidate" in result.stdout, result.stderr
    assert _served_model(cluster) is None
    # An experiment may try the candidate, never the merely published model.
    auth = {"Authorization": f"Bearer {cluster.admin_token}"}

    def experiment_trying(model: str):
        experiment = {"id": "x", "variants": [{"name": "control"}, {"name": "new", "model": model}]}
        return http_json(cluster.origin.url, "PUT", "/v1/admin/experiments/x", experiment, auth)

    status, body = experiment_trying(first)
    assert status == 422 and "only published" in body["error"]["message"] and first in body["error"]["message"]
    status, _ = experiment_trying(second)
    assert status == 200

    result = _cli(cluster, "model", "activate", first)
    assert result.returncode == 0 and f"model {first} active at data version" in result.stdout, result.stderr
    assert _served_model(cluster) == first
    result = _cli(cluster, "model", "publish", str(second_bundle_dir), "--activate")
    assert result.returncode == 0 and f"model {second} active at data version" in result.stdout, result.stderr
    assert _served_model(cluster) == second

    listing = _cli(cluster, "model", "list", "--json")
    assert listing.returncode == 0, listing.stderr
    models = json.loads(listing.stdout)
    assert _states(models) == {first: "retired", second: "active"}
    assert [m["active"] for m in models] == [False, True]
    table = _cli(cluster, "model", "list").stdout.splitlines()
    assert table[0].split() == ["VERSION", "STATE", "PUBLISHED", "(UTC)", "SHA256"]
    assert [row.split()[:2] for row in table[1:]] == [[first, "retired"], [second, "active"]]
    assert {row.split()[-1] for row in table[1:]} == {m["sha256"][:12] for m in models}
    # The rollback.
    assert _cli(cluster, "model", "activate", first).returncode == 0
    assert _served_model(cluster) == first


def test_the_http_publish_without_a_state_still_activates_and_a_bad_state_is_refused(cluster, bundle_dir):
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    body = msgpack.packb({"manifest": manifest, "model": (bundle_dir / "model.onnx").read_bytes()})
    headers = {"Authorization": f"Bearer {cluster.admin_token}", "Content-Type": "application/x-msgpack"}
    status, _, raw = http_call(cluster.origin.url, "POST", "/v1/admin/models?state=retired", body, headers)
    assert status == 422 and json.loads(raw)["error"]["code"] == "invalid_query"
    status, _, raw = http_call(cluster.origin.url, "POST", "/v1/admin/models", body, headers)
    assert status == 201 and json.loads(raw)["state"] == "active", raw
    assert _served_model(cluster) == manifest["version"]


def test_model_commands_refuse_with_one_line_and_no_traceback(cluster, bundle_dir, tmp_path):
    url = cluster.origin.url
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "manifest.json").write_text("{not json")
    (broken / "model.onnx").write_bytes(b"")
    tampered = tmp_path / "tampered"
    tampered.mkdir()
    (tampered / "manifest.json").write_text((bundle_dir / "manifest.json").read_text())
    (tampered / "model.onnx").write_bytes((bundle_dir / "model.onnx").read_bytes()[:-10])
    # The token may come from a file instead (EDGEREC_ADMIN_TOKEN_FILE), as every secret of edgerec may.
    token_file = tmp_path / "admin-token"
    token_file.write_text(cluster.admin_token + "\n")
    # None of them stores anything: they run side by side.
    (
        no_token,
        wrong_token,
        unknown,
        not_a_bundle,
        unreadable,
        tampered_one,
        unreachable,
        not_a_url,
        both,
        from_file,
    ) = in_parallel(
        lambda: run_cli("model", "list", "--origin", url),
        lambda: run_cli("model", "list", "--origin", url, admin_token="not-the-admin-token-123"),
        lambda: _cli(cluster, "model", "activate", "no-such-model"),
        lambda: _cli(cluster, "model", "publish", str(tmp_path)),
        lambda: _cli(cluster, "model", "publish", str(broken)),
        lambda: _cli(cluster, "model", "publish", str(tampered), "--activate"),
        lambda: run_cli(
            "model", "list", "--origin", f"http://127.0.0.1:{free_port()}", admin_token=cluster.admin_token
        ),
        lambda: run_cli("model", "list", "--origin", "127.0.0.1:8080", admin_token=cluster.admin_token),
        lambda: _cli(cluster, "model", "publish", str(bundle_dir), "--activate", "--candidate"),
        lambda: run_cli("model", "list", "--origin", url, env={"EDGEREC_ADMIN_TOKEN_FILE": str(token_file)}),
    )
    assert_one_line_error(no_token, "EDGEREC_ADMIN_TOKEN")
    assert_one_line_error(wrong_token, "HTTP 401")
    assert_one_line_error(unknown, "HTTP 404", "no-such-model")
    assert_one_line_error(not_a_bundle, "not a model bundle", "manifest.json")
    assert_one_line_error(unreadable, "cannot read the bundle")
    assert_one_line_error(tampered_one, "HTTP 422")
    assert_one_line_error(unreachable, "cannot reach the origin")
    assert_one_line_error(not_a_url, "expected http://")
    assert both.returncode == 2 and "not allowed with argument" in both.stderr and "Traceback" not in both.stderr
    assert from_file.returncode == 0 and "no models published yet" in from_file.stdout, from_file.stderr
    assert json.loads(_cli(cluster, "model", "list", "--json").stdout) == []  # nothing was stored
