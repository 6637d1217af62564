"""The profile store's settings as the edge resolves them at start: defaults under the data directory, the Redis URL
as a secret from the environment only, and one-line refusals for what cannot work (a Redis store without a URL, an
embedded store shared by several worker processes)."""

from __future__ import annotations

import os

import pytest

from edge_node.config import ConfigError, EdgeConfig, config_from_env, config_to_env
from edge_node.settings import EdgeSettings
from edgerec.cli.services import ensure_signing_keys


@pytest.fixture
def edge_env(monkeypatch, tmp_path):
    for name in ("EDGEREC_PROFILE_REDIS_URL", "EDGEREC_PROFILE_REDIS_URL_FILE", "EDGEREC_PROFILE_STORE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("EDGEREC_SYNC_TOKEN", "t" * 32)
    monkeypatch.setenv("EDGEREC_PSEUDONYM_KEY", "k" * 32)
    monkeypatch.setenv("EDGEREC_ORIGIN_PUBLIC_KEY", str(ensure_signing_keys(tmp_path)[1]))
    return monkeypatch


def config(**flags) -> EdgeConfig:
    return EdgeConfig.from_settings(EdgeSettings.load({"regions": "GB", **flags}))


def test_the_embedded_store_is_the_default_under_the_data_directory(edge_env, tmp_path):
    resolved = config(data_dir=str(tmp_path / "edge"), profile_retention="30", profile_budget_mb="64")
    assert resolved.profile_store == "embedded"
    assert resolved.profile_directory == tmp_path / "edge" / "profiles"
    assert resolved.profile_retention_s == 30 * 86400 and resolved.profile_budget_bytes == 64 * 1024 * 1024
    assert config(profile_dir=str(tmp_path / "p")).profile_directory == tmp_path / "p"


def test_a_redis_store_needs_its_url_which_is_a_secret_kept_out_of_the_workers_config(edge_env):
    with pytest.raises(ConfigError, match="EDGEREC_PROFILE_REDIS_URL must be set"):
        config(profile_store="redis")
    edge_env.setenv("EDGEREC_PROFILE_REDIS_URL", "http://127.0.0.1:6379")
    with pytest.raises(ConfigError, match="redis://, rediss:// or unix://"):
        config(profile_store="redis")
    edge_env.setenv("EDGEREC_PROFILE_REDIS_URL", "redis://:pw@127.0.0.1:6379/0")
    resolved = config(profile_store="redis", workers="2")  # workers may share Redis
    assert resolved.profile_redis_url == "redis://:pw@127.0.0.1:6379/0"
    edge_env.setenv("EDGEREC_EDGE_CONFIG_JSON", "")  # restored at teardown; config_to_env writes it
    config_to_env(resolved)
    assert ":pw@" not in os.environ["EDGEREC_EDGE_CONFIG_JSON"]
    assert config_from_env().profile_redis_url == resolved.profile_redis_url


def test_an_embedded_store_is_refused_for_several_workers(edge_env):
    with pytest.raises(ConfigError, match="belongs to one process") as refused:
        config(workers="2")
    assert "\n" not in str(refused.value)
    assert config(workers="2", profile_store="off").profile_store == "off"
