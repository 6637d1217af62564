"""Least privilege at the origin: tokens held only as digests, admin credentials limited to their scopes (403
`forbidden_scope`, audited with the credential's name), region tokens that read only their region's offers, and
token files re-read on a change without a restart."""

from __future__ import annotations

import hashlib
import json

import msgpack
import pytest

from edgerec.cli.process import http_call, http_json
from edgerec.cli.services import ensure_signing_keys
from origin_sync.origin.credentials import (
    CredentialError,
    Credentials,
    parse_admin_credentials,
)
from origin_sync.wire.signing import Verifier, open_envelope
from tests.conftest import Cluster, make_offer, wait_until

CATALOG_TOKEN = "catalog-bot-token-0123456789"
AUDITOR_TOKEN = "auditor-token-0123456789abcd"


def _sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def test_tokens_are_kept_as_digests_and_may_be_given_as_digests():
    named = parse_admin_credentials(json.dumps({"auditor": {"sha256": _sha256(AUDITOR_TOKEN), "scopes": ["read"]}}))
    credentials = Credentials.build(
        ("admin-token-0123456789",),
        named,
        (f"sha256:{_sha256('fleet-token-0123456789')}",),
        {"GB": ("gb-token-0123456789",)},
    )
    credential, digest = credentials.admin_for(AUDITOR_TOKEN.encode())
    assert credential.name == "auditor" and credential.actor(digest) == f"admin:auditor:{_sha256(AUDITOR_TOKEN)[:8]}"
    assert credentials.admin_for(b"admin-token-0123456789")[0].actor(digest).startswith("admin:")
    assert credentials.sync_scope(b"fleet-token-0123456789") == {"*"}
    assert credentials.sync_scope(b"gb-token-0123456789") == {"GB"} and credentials.sync_scope(b"nope") is None
    held = repr(credentials.__dict__)
    assert "gb-token-0123456789" not in held and "admin-token-0123456789" not in held


def test_production_mode_holds_named_admin_tokens_to_the_strength_of_every_secret(monkeypatch):
    weak = json.dumps({"ci-bot": {"token": "aaaaaaaaaaaaaaaaaaaa", "scopes": ["catalog"]}})
    assert parse_admin_credentials(weak)[0].name == "ci-bot"  # outside production it is the operator's call
    monkeypatch.setenv("EDGEREC_ENV", "production")
    with pytest.raises(CredentialError, match=r"EDGEREC_ADMIN_TOKENS \(ci-bot\) is too weak"):
        parse_admin_credentials(weak)
    strong = json.dumps(
        {
            "ci-bot": {"token": CATALOG_TOKEN, "scopes": ["catalog"]},
            "auditor": {"sha256": _sha256(AUDITOR_TOKEN), "scopes": ["read"]},
        }
    )
    assert {c.name for c in parse_admin_credentials(strong)} == {"ci-bot", "auditor"}


@pytest.mark.parametrize(
    "admin_tokens,named,sync,message",
    [
        (("short",), "", ("fleet-token-0123456789",), "at least 16"),
        (("admin-token-0123456789",), "", ("sha256:abc",), "64 hex"),
        (("same-token-0123456789",), "", ("same-token-0123456789",), "must not share"),
        ((), "", ("fleet-token-0123456789",), "EDGEREC_ADMIN_TOKEN"),
        (
            (),
            '{"x": {"token": "catalog-bot-token-0123456789", "scopes": ["root"]}}',
            ("fleet-token-0123456789",),
            "scopes",
        ),
        ((), "[1, 2]", ("fleet-token-0123456789",), "JSON object"),
    ],
)
def test_bad_credential_settings_are_refused_without_showing_a_token(admin_tokens, named, sync, message):
    with pytest.raises(CredentialError, match=message) as refused:
        Credentials.build(admin_tokens, parse_admin_credentials(named), sync, {})
    assert "0123456789" not in str(refused.value)


@pytest.fixture
def scoped(tmp_path, bundle_dir):
    cluster = Cluster(tmp_path, bundle_dir)
    admin_file = tmp_path / "admin-tokens.json"
    admin_file.write_text(
        json.dumps(
            {
                "catalog-bot": {"token": CATALOG_TOKEN, "scopes": ["catalog"]},
                "auditor": {"sha256": _sha256(AUDITOR_TOKEN), "scopes": ["read"]},
            }
        )
    )
    cluster.origin.env["EDGEREC_ADMIN_TOKENS"] = str(admin_file)
    cluster.start_origin()
    try:
        yield cluster, admin_file
    finally:
        cluster.stop()


def _call(cluster, method: str, path: str, token: str, body=None) -> tuple[int, dict]:
    return http_json(cluster.origin.url, method, path, body, {"Authorization": f"Bearer {token}"})


def test_an_admin_credential_may_do_only_what_its_scopes_allow_and_refusals_are_audited(scoped):
    cluster, _ = scoped
    offer = make_offer("GB-1", "10001")
    assert _call(cluster, "PUT", "/v1/admin/offers/GB-1", CATALOG_TOKEN, offer)[0] == 200
    assert _call(cluster, "GET", "/v1/admin/offers/GB-1", CATALOG_TOKEN)[0] == 200  # its own scope's reads
    for method, path, token in (
        ("POST", "/v1/admin/models/m1/activate", CATALOG_TOKEN),
        ("GET", "/v1/admin/audit", CATALOG_TOKEN),
        ("POST", "/v1/admin/keys", CATALOG_TOKEN),
        ("PUT", "/v1/admin/offers/GB-1", AUDITOR_TOKEN),
        ("POST", "/v1/admin/compact", AUDITOR_TOKEN),
    ):
        status, answer = _call(cluster, method, path, token, offer if method == "PUT" else {})
        assert status == 403 and answer["error"]["code"] == "forbidden_scope", (method, path, answer)
    for path in ("/v1/admin/status", "/v1/admin/models", "/v1/admin/offers/GB-1", "/v1/admin/keys"):
        assert _call(cluster, "GET", path, AUDITOR_TOKEN)[0] == 200, path
    # EDGEREC_ADMIN_TOKEN keeps every scope.
    assert _call(cluster, "POST", "/v1/admin/compact", cluster.admin_token)[0] == 200
    status, audit = _call(cluster, "GET", "/v1/admin/audit?limit=100", AUDITOR_TOKEN)
    assert status == 200
    rows = {(r["actor"], r["method"], r["path"], r["status"]) for r in audit["entries"]}
    bot, auditor = f"admin:catalog-bot:{_sha256(CATALOG_TOKEN)[:8]}", f"admin:auditor:{_sha256(AUDITOR_TOKEN)[:8]}"
    assert (bot, "PUT", "/v1/admin/offers/GB-1", 200) in rows
    assert (bot, "POST", "/v1/admin/models/m1/activate", 403) in rows
    assert (auditor, "PUT", "/v1/admin/offers/GB-1", 403) in rows
    assert CATALOG_TOKEN not in json.dumps(audit) + cluster.origin.log_path.read_text()


def test_a_bad_token_file_is_not_taken_and_the_credentials_in_force_stay(scoped):
    cluster, admin_file = scoped
    admin_file.write_text("{not json")
    wait_until(lambda: "credentials not reloaded" in cluster.origin.log_path.read_text(), what="a refused reload")
    assert _call(cluster, "GET", "/v1/admin/status", AUDITOR_TOKEN)[0] == 200
    metrics = http_call(cluster.origin.url, "GET", "/metrics")[2].decode()
    assert 'edgerec_origin_credential_reloads_total{result="failed"} 1.0' in metrics
    admin_file.write_text(json.dumps({"auditor": {"sha256": _sha256(AUDITOR_TOKEN), "scopes": ["read"]}}))
    wait_until(lambda: _call(cluster, "GET", "/v1/admin/status", CATALOG_TOKEN)[0] == 401, what="the bot removed")
    assert _call(cluster, "GET", "/v1/admin/status", AUDITOR_TOKEN)[0] == 200


def test_a_region_token_reads_none_of_another_region_offers_in_snapshots_or_deltas(cluster):
    cluster.put_offer(make_offer("GB-1", "10001", region="GB"))
    cluster.put_offer(make_offer("DE-1", "10002", region="DE", currency="EUR"))
    headers = {"Authorization": f"Bearer {cluster.region_tokens['GB']}"}
    verifier = Verifier.from_config(str(ensure_signing_keys(cluster.workdir)[1]))
    status, _, raw = http_call(cluster.origin.url, "GET", "/v1/sync/snapshot?regions=GB", headers=headers)
    assert status == 200
    assert [o["id"] for o in open_envelope(raw, "snapshot", verifier)["offers"]] == ["GB-1"]
    status, _, raw = http_call(cluster.origin.url, "GET", "/v1/sync/deltas?regions=GB&since=0", headers=headers)
    changes = [msgpack.unpackb(c["body"]) for c in open_envelope(raw, "deltas", verifier)["changes"]]
    assert [c["offer"]["id"] for c in changes if c["op"] == "offer_upsert"] == ["GB-1"]
    # Asking for DE outright is 403 (test_origin_api), and so are DE's events (test_events_pipeline).
