"""Secrets from the environment or `<VAR>_FILE`, and production mode refusing weak secrets and plain HTTP: the
helpers, the parsed configs, and the real `edgerec` command failing with a message and no traceback."""

from __future__ import annotations

import argparse
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from edge_node.config import EdgeConfig, config_from_env, config_to_env
from edgerec.core.settings import (
    SettingError,
    production_mode,
    require_tls_beyond_loopback,
    secret_from_env,
    weak_secret_reason,
)
from edgerec.core.tls import regions_in_certificate
from origin_sync.origin.config import OriginConfig
from origin_sync.wire.signing import generate_key_pair

REPO = Path(__file__).resolve().parents[2]


def strong() -> str:
    return secrets.token_urlsafe(32)


def parse(config_cls, argv=()):
    parser = argparse.ArgumentParser()
    config_cls.add_arguments(parser)
    return config_cls.from_args(parser.parse_args(list(argv)))


@pytest.fixture
def keys(tmp_path) -> tuple[Path, Path]:
    return generate_key_pair(tmp_path / "keys")


@pytest.fixture
def clean_env(monkeypatch):
    for name in list(os.environ):
        if name.startswith("EDGEREC_") or name == "PGPASSWORD":
            monkeypatch.delenv(name)
    return monkeypatch


def test_a_secret_is_read_from_the_file_its_FILE_variable_names(tmp_path):
    secret_file = tmp_path / "admin-token"
    secret_file.write_text("from-a-file-0123456789\n")
    assert (
        secret_from_env("EDGEREC_ADMIN_TOKEN", {"EDGEREC_ADMIN_TOKEN_FILE": str(secret_file)})
        == "from-a-file-0123456789"
    )
    assert secret_from_env("EDGEREC_ADMIN_TOKEN", {"EDGEREC_ADMIN_TOKEN": " inline "}) == "inline"
    assert secret_from_env("EDGEREC_ADMIN_TOKEN", {}) == ""


def test_a_secret_set_twice_or_in_a_missing_file_is_refused_naming_the_variable(tmp_path):
    with pytest.raises(SettingError, match="EDGEREC_CDN_SECRET or EDGEREC_CDN_SECRET_FILE, not both"):
        secret_from_env(
            "EDGEREC_CDN_SECRET", {"EDGEREC_CDN_SECRET": "x" * 20, "EDGEREC_CDN_SECRET_FILE": str(tmp_path / "f")}
        )
    with pytest.raises(SettingError, match="EDGEREC_CDN_SECRET_FILE: cannot read"):
        secret_from_env("EDGEREC_CDN_SECRET", {"EDGEREC_CDN_SECRET_FILE": str(tmp_path / "missing")})


@pytest.mark.parametrize(
    "value, reason",
    [
        ("short", "shorter than 16"),
        ("aaaaaaaaaaaaaaaaaaaaaaaa", "distinct characters"),
        ("abababababababababab", "distinct characters"),
        ("new-sync-token-0001", "known example"),
        ("please-changeme-now-1234", "known example"),
    ],
)
def test_weak_secrets_are_told_apart_from_strong_ones(value, reason):
    assert reason in weak_secret_reason(value)
    assert weak_secret_reason(strong()) is None


def test_production_mode_comes_from_the_flag_or_EDGEREC_ENV_and_an_unknown_value_is_refused():
    assert production_mode(False, {"EDGEREC_ENV": "production"})
    assert production_mode(True, {})
    assert not production_mode(False, {"EDGEREC_ENV": "development"})
    with pytest.raises(SettingError, match="EDGEREC_ENV"):
        production_mode(False, {"EDGEREC_ENV": "prod"})


def test_plain_http_is_allowed_to_loopback_only():
    for url in ("http://127.0.0.1:8080", "http://localhost:8080", "http://[::1]:8080", "https://origin.example"):
        require_tls_beyond_loopback("--origin", url)
    with pytest.raises(SettingError, match="--origin: 'http://origin.example' is plain HTTP"):
        require_tls_beyond_loopback("--origin", "http://origin.example")


def test_the_regions_of_a_client_certificate_come_from_its_cn_dns_and_spiffe_names():
    certificate = {
        "subject": ((("commonName", "edge.gb"),),),
        "subjectAltName": (
            ("DNS", "edge.ie"),
            ("URI", "spiffe://edgerec/edge/DE"),
            ("DNS", "edge.example.com"),
            ("URI", "spiffe://other/edge/FR"),
        ),
    }
    assert regions_in_certificate(certificate) == {"GB", "IE", "DE"}
    assert regions_in_certificate({"subject": ((("commonName", "ops.example"),),)}) == frozenset()


def test_every_secret_variable_accepts_a_FILE_form_at_origin_and_edge_and_in_edge_workers(clean_env, keys, tmp_path):
    values = {
        name: strong()
        for name in ("EDGEREC_ADMIN_TOKEN", "EDGEREC_SYNC_TOKEN", "EDGEREC_CDN_SECRET", "EDGEREC_PSEUDONYM_KEY")
    }
    for name, value in values.items():
        (tmp_path / name).write_text(value + "\n")
        clean_env.setenv(f"{name}_FILE", str(tmp_path / name))
    gb_token = strong()
    (tmp_path / "region-tokens").write_text(f"GB={gb_token}")
    clean_env.setenv("EDGEREC_REGION_TOKENS_FILE", str(tmp_path / "region-tokens"))
    clean_env.setenv("EDGEREC_SIGNING_KEY", str(keys[0]))
    clean_env.setenv("EDGEREC_ORIGIN_PUBLIC_KEY", str(keys[1]))
    clean_env.setenv("EDGEREC_REGIONS", "GB")
    origin = parse(OriginConfig)
    assert origin.production is False and origin.tls is None
    assert repr(origin).count(values["EDGEREC_ADMIN_TOKEN"]) == 0
    edge = parse(EdgeConfig)
    assert (edge.sync_token, edge.pseudonym_key, edge.cdn.secrets) == (
        values["EDGEREC_SYNC_TOKEN"],
        values["EDGEREC_PSEUDONYM_KEY"],
        (values["EDGEREC_CDN_SECRET"],),
    )
    config_to_env(edge)  # what a worker process rebuilds its config from
    worker = config_from_env()
    assert (worker.sync_token, worker.pseudonym_key, worker.cdn.secrets) == (
        edge.sync_token,
        edge.pseudonym_key,
        edge.cdn.secrets,
    )


def run_edgerec(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("EDGEREC_") and k != "PGPASSWORD"}
    return subprocess.run(
        [sys.executable, "-m", "edgerec", *args],
        env={**base, **env},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )


def assert_refused(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert result.stderr.startswith("edgerec: configuration error:")
    for fragment in fragments:
        assert fragment in result.stderr


def test_a_production_origin_refuses_weak_or_missing_secrets_and_plain_http(keys, tmp_path):
    admin, region = strong(), strong()
    env = {
        "EDGEREC_ENV": "production",
        "EDGEREC_SIGNING_KEY": str(keys[0]),
        "EDGEREC_REGION_TOKENS": f"GB={region}",
        "EDGEREC_ADMIN_TOKEN": "aaaaaaaaaaaaaaaaaaaa",
    }
    serve = ["origin", "serve", "--db", str(tmp_path / "o.db")]
    assert_refused(
        run_edgerec(serve, env), "EDGEREC_ADMIN_TOKEN is too weak for production", "fewer than 8 distinct characters"
    )
    weak_region = {**env, "EDGEREC_ADMIN_TOKEN": admin, "EDGEREC_REGION_TOKENS": "GB=new-sync-token-0001"}
    assert_refused(run_edgerec(serve, weak_region), "EDGEREC_REGION_TOKENS (region GB) is too weak")
    missing = {k: v for k, v in env.items() if k != "EDGEREC_ADMIN_TOKEN"}
    assert_refused(run_edgerec(serve, missing), "EDGEREC_ADMIN_TOKEN")
    assert_refused(
        run_edgerec(serve, {**env, "EDGEREC_ADMIN_TOKEN": admin}),
        "production: the origin serves HTTPS",
        "--behind-tls-proxy",
    )
    assert admin not in run_edgerec(serve, {**env, "EDGEREC_ADMIN_TOKEN": admin}).stderr


def test_a_production_edge_refuses_a_weak_token_and_a_plain_http_origin_beyond_loopback(keys, tmp_path):
    env = {"EDGEREC_ORIGIN_PUBLIC_KEY": str(keys[1]), "EDGEREC_REGIONS": "GB", "EDGEREC_SYNC_TOKEN": strong()}
    serve = ["edge", "serve", "--data-dir", str(tmp_path / "edge"), "--production"]
    assert_refused(
        run_edgerec([*serve, "--origin", "http://origin.internal:8080"], env),
        "--origin/EDGEREC_ORIGIN_URL",
        "plain HTTP",
    )
    assert_refused(
        run_edgerec([*serve, "--origin", "https://origin.internal"], {**env, "EDGEREC_SYNC_TOKEN": "tok1"}),
        "EDGEREC_SYNC_TOKEN is too weak for production",
    )
    assert_refused(
        run_edgerec(
            [*serve, "--origin", "https://origin.internal"], {**env, "EDGEREC_PSEUDONYM_KEY": "changeme-changeme-1"}
        ),
        "EDGEREC_PSEUDONYM_KEY is too weak",
    )


def test_unusable_tls_files_are_a_clear_error_at_start(keys, tmp_path):
    env = {"EDGEREC_SIGNING_KEY": str(keys[0]), "EDGEREC_ADMIN_TOKEN": strong(), "EDGEREC_SYNC_TOKEN": strong()}
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate")
    serve = ["origin", "serve", "--db", str(tmp_path / "o.db")]
    assert_refused(
        run_edgerec([*serve, "--tls-cert", str(tmp_path / "none.crt"), "--tls-key", str(garbage)], env),
        "does not exist",
    )
    assert_refused(
        run_edgerec([*serve, "--tls-cert", str(garbage), "--tls-key", str(garbage)], env),
        "not a usable certificate and private key",
    )
    assert_refused(run_edgerec([*serve, "--require-client-cert"], env), "need the origin to serve TLS")
    edge_env = {"EDGEREC_ORIGIN_PUBLIC_KEY": str(keys[1]), "EDGEREC_REGIONS": "GB", "EDGEREC_SYNC_TOKEN": strong()}
    assert_refused(
        run_edgerec(["edge", "serve", "--data-dir", str(tmp_path / "e"), "--origin-ca", str(garbage)], edge_env),
        "--origin-ca",
        "not a PEM CA bundle",
    )
    for interval in ("0", "-1", "nan", "7200"):
        assert_refused(
            run_edgerec(
                ["edge", "serve", "--data-dir", str(tmp_path / "e"), "--tls-reload-interval", interval], edge_env
            ),
            "--tls-reload-interval",
            "between 0 and 3600",
        )


def test_a_production_origin_with_tls_and_strong_secrets_is_accepted(clean_env, keys, pki):
    clean_env.setenv("EDGEREC_ENV", "production")
    clean_env.setenv("EDGEREC_SIGNING_KEY", str(keys[0]))
    clean_env.setenv("EDGEREC_ADMIN_TOKEN", strong())
    clean_env.setenv("EDGEREC_REGION_TOKENS", f"GB={strong()}")
    config = parse(
        OriginConfig,
        [
            "--tls-cert",
            str(pki.origin_cert),
            "--tls-key",
            str(pki.origin_key),
            "--client-ca",
            str(pki.ca_file),
            "--require-client-cert",
        ],
    )
    assert config.production and config.tls is not None and config.tls.require_client_cert
    behind_proxy = parse(OriginConfig, ["--behind-tls-proxy"])
    assert behind_proxy.tls is None and behind_proxy.behind_tls_proxy
