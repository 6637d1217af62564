"""The services read exactly the names infra/app_contract.json promises the deployment (ports, variables, paths)."""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import pytest

from edge_node.config import EdgeConfig
from origin_sync.config import OriginConfig

CONTRACT = json.loads((Path(__file__).resolve().parents[2] / "infra" / "app_contract.json").read_text())


def _parse(config_cls, argv=()):
    parser = argparse.ArgumentParser()
    config_cls.add_arguments(parser)
    return config_cls.from_args(parser.parse_args(list(argv)))


@pytest.fixture
def secrets_env(monkeypatch, tmp_path):
    from origin_sync.protocol import generate_key_pair

    private_key, public_key = generate_key_pair(tmp_path / "keys")
    monkeypatch.setenv(CONTRACT["origin"]["secret_env"]["signing_key"], str(private_key))
    monkeypatch.setenv(CONTRACT["edge"]["env"]["origin_public_key"], str(public_key))
    monkeypatch.setenv(CONTRACT["origin"]["secret_env"]["admin_token"], "a" * 20)
    monkeypatch.setenv(CONTRACT["edge"]["secret_env"]["sync_token"], "new-sync-token-0001,old-sync-token-0001")
    monkeypatch.setenv(CONTRACT["edge"]["env"]["regions"], "DE,FR")


def test_default_ports_are_the_contract_ports(secrets_env):
    assert _parse(EdgeConfig).port == CONTRACT["edge"]["port"]
    assert _parse(OriginConfig).port == CONTRACT["origin"]["port"]


def test_the_edge_reads_the_contract_variables(secrets_env, monkeypatch):
    env = CONTRACT["edge"]["env"]
    monkeypatch.setenv(env["port"], "9001")
    monkeypatch.setenv(env["origin_url"], "https://origin.example:8443")
    monkeypatch.setenv(env["data_dir"], "/var/lib/edgerec")
    config = _parse(EdgeConfig)
    assert (config.port, config.origin_url, str(config.data_dir)) == (9001, "https://origin.example:8443",
                                                                     "/var/lib/edgerec")
    assert config.regions == ("DE", "FR")
    assert config.sync_token == "new-sync-token-0001"  # the first value is the one presented


def test_the_origin_reads_the_contract_variables_and_accepts_every_listed_token(secrets_env, monkeypatch):
    env = CONTRACT["origin"]["env"]
    monkeypatch.setenv(env["port"], "9002")
    monkeypatch.setenv(env["db"], "/data/origin.db")
    monkeypatch.setenv(env["blob_dir"], "/data/blobs")
    config = _parse(OriginConfig)
    assert (config.port, str(config.db_path), str(config.blob_dir)) == (9002, "/data/origin.db", "/data/blobs")
    # The origin keeps only the tokens' digests, in the order given.
    assert config.credentials.sync_tokens == tuple(hashlib.sha256(t.encode()).digest()
                                                   for t in ("new-sync-token-0001", "old-sync-token-0001"))
    assert "new-sync-token-0001" not in repr(config)
