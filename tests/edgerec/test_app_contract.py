"""The services read exactly the names infra/app_contract.json promises the deployment (ports, variables, paths)."""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import pytest

from edge_node.config import EdgeConfig
from origin_sync.origin.config import OriginConfig

CONTRACT = json.loads((Path(__file__).resolve().parents[2] / "infra" / "app_contract.json").read_text())


def _parse(config_cls, argv=()):
    parser = argparse.ArgumentParser()
    config_cls.add_arguments(parser)
    return config_cls.from_args(parser.parse_args(list(argv)))


@pytest.fixture
def secrets_env(monkeypatch, tmp_path):
    from origin_sync.wire.signing import generate_key_pair

    private_key, public_key = generate_key_pair(tmp_path / "keys")
    monkeypatch.setenv(CONTRACT["origin"]["secret_env"]["signing_key"], str(private_key))
    monkeypatch.setenv(CONTRACT["edge"]["env"]["origin_public_key"], str(public_key))
    monkeypatch.setenv(CONTRACT["origin"]["secret_env"]["admin_token"], "a" * 20)
    monkeypatch.setenv(CONTRACT["edge"]["secret_env"]["sync_token"], "new-sync-token-0001,old-sync-token-0001")
    monkeypatch.setenv(CONTRACT["edge"]["env"]["regions"], "DE,FR")


def _parse_with(monkeypatch, config_class, service: str, values: dict[str, str]):
    """The config parsed with the service's contract variables set to these values (by their contract names)."""
    for name, value in values.items():
        monkeypatch.setenv(CONTRACT[service]["env"][name], value)
    return _parse(config_class)


def test_default_ports_are_the_contract_ports(secrets_env):
    assert _parse(EdgeConfig).port == CONTRACT["edge"]["port"]
    assert _parse(OriginConfig).port == CONTRACT["origin"]["port"]


def test_the_edge_reads_the_contract_variables(secrets_env, monkeypatch):
    values = {"port": "9001", "origin_url": "https://origin.example:8443", "data_dir": "/var/lib/edgerec"}
    config = _parse_with(monkeypatch, EdgeConfig, "edge", values)
    assert (config.port, config.origin_url, str(config.data_dir)) == (
        9001,
        "https://origin.example:8443",
        "/var/lib/edgerec",
    )
    assert config.regions == ("DE", "FR")
    assert config.sync_token == "new-sync-token-0001"  # the first value is the one presented


def test_the_origin_reads_the_contract_variables_and_accepts_every_listed_token(secrets_env, monkeypatch):
    values = {"port": "9002", "db": "/data/origin.db", "blob_dir": "/data/blobs"}
    config = _parse_with(monkeypatch, OriginConfig, "origin", values)
    assert (config.port, str(config.db_path), str(config.blob_dir)) == (9002, "/data/origin.db", "/data/blobs")
    # The origin keeps only the tokens' digests, in the order given.
    assert config.credentials.sync_tokens == tuple(
        hashlib.sha256(t.encode()).digest() for t in ("new-sync-token-0001", "old-sync-token-0001")
    )
    assert "new-sync-token-0001" not in repr(config)


def _self_signed(directory: Path, name: str) -> tuple[Path, Path]:
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / f"{name}.crt", directory / f"{name}.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_file, key_file


def test_the_origin_reads_the_production_and_tls_variables_the_deployment_sets(secrets_env, monkeypatch, tmp_path):
    env = CONTRACT["origin"]["env"]
    cert, key = _self_signed(tmp_path, "origin")
    monkeypatch.setenv(CONTRACT["origin"]["secret_env"]["admin_token"], "Xq7-admin-9fKp2LmZ4tRw")
    monkeypatch.setenv(CONTRACT["origin"]["secret_env"]["region_tokens"], "DE=Vb3-region-7hJk1NsQ8eYu")
    monkeypatch.setenv(CONTRACT["origin"]["secret_env"]["sync_token"], "Pw5-all-regions-3dGh8KcV2")
    monkeypatch.delenv("PGPASSWORD", raising=False)
    monkeypatch.setenv(env["environment"], CONTRACT["production"]["environment_value"])
    monkeypatch.setenv(env["host"], "0.0.0.0")
    monkeypatch.setenv(env["behind_tls_proxy"], "false")
    monkeypatch.setenv(env["tls_cert_file"], str(cert))
    monkeypatch.setenv(env["tls_key_file"], str(key))
    config = _parse(OriginConfig)
    assert config.production and not config.behind_tls_proxy and config.host == "0.0.0.0"
    assert (config.tls.cert_file, config.tls.key_file) == (cert, key)
    # Without the key pair, the deployment's settings make the origin refuse to start, not serve plain HTTP.
    monkeypatch.delenv(env["tls_cert_file"])
    monkeypatch.delenv(env["tls_key_file"])
    with pytest.raises(ValueError, match="HTTPS"):
        _parse(OriginConfig)


def test_the_edge_reads_the_production_and_tls_variables_the_deployment_sets(secrets_env, monkeypatch, tmp_path):
    env, optional = CONTRACT["edge"]["env"], CONTRACT["edge"]["optional_env"]
    ca, _ = _self_signed(tmp_path, "origin-ca")
    client_cert, client_key = _self_signed(tmp_path, "edge.de")
    monkeypatch.setenv(CONTRACT["edge"]["secret_env"]["sync_token"], "Vb3-region-7hJk1NsQ8eYu")
    monkeypatch.setenv(env["environment"], CONTRACT["production"]["environment_value"])
    monkeypatch.setenv(env["host"], "0.0.0.0")
    monkeypatch.setenv(env["origin_url"], "https://origin.example")
    monkeypatch.setenv(optional["origin_ca_file"], str(ca))
    monkeypatch.setenv(optional["client_cert_file"], str(client_cert))
    monkeypatch.setenv(optional["client_key_file"], str(client_key))
    config = _parse(EdgeConfig)
    assert config.production and config.host == "0.0.0.0"
    assert (config.origin_ca_file, config.client_cert_file, config.client_key_file) == (
        str(ca),
        str(client_cert),
        str(client_key),
    )
    monkeypatch.setenv(env["origin_url"], "http://origin.example")
    with pytest.raises(ValueError, match="https"):
        _parse(EdgeConfig)
