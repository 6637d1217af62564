"""infra/compose agrees with the application (app_contract.json), and its HAProxy and Prometheus configurations are
valid to the real tools. No Docker daemon runs here, so the stack itself is not started."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import needs

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "infra" / "compose"
CONTRACT = json.loads((ROOT / "infra" / "app_contract.json").read_text())


@pytest.fixture(scope="module")
def stack() -> dict:
    return yaml.safe_load((COMPOSE / "compose.yaml").read_text())


def _services(stack: dict, image_prefix: str) -> dict[str, dict]:
    return {
        name: s
        for name, s in stack["services"].items()
        if s.get("image", "").startswith(image_prefix) and name != "keygen"
    }


def test_every_variable_the_services_get_is_one_the_application_reads(stack):
    for role, prefix in (("edge", "edgerec-edge"), ("origin", "edgerec-origin")):
        spec = CONTRACT[role]
        known = {*spec["env"].values(), *spec.get("secret_env", {}).values(), *spec.get("optional_env", {}).values()}
        services = _services(stack, prefix)
        assert services, role
        for name, service in services.items():
            unknown = (
                set(service["environment"])
                - known
                - {"EDGEREC_REGIONS", "EDGEREC_CDN_SECRET", "EDGEREC_PSEUDONYM_KEY", "EDGEREC_SYNC_TOKEN"}
            )
            assert not unknown, f"{name}: {sorted(unknown)} are not in app_contract.json"
            assert service["environment"][spec["env"]["port"]] == str(spec["port"])
            check = " ".join(service["healthcheck"]["test"])
            assert f"127.0.0.1:{spec['port']}{spec['liveness_path']}" in check


def test_edges_list_both_origins_and_keep_their_copy_on_a_volume_of_their_own(stack):
    origins = {f"http://{name}:{CONTRACT['origin']['port']}" for name in _services(stack, "edgerec-origin")}
    assert len(origins) == 2
    volumes = []
    for name, edge in _services(stack, "edgerec-edge").items():
        assert set(edge["environment"]["EDGEREC_ORIGIN_URL"].split(",")) == origins, name
        data = [v for v in edge["volumes"] if v.endswith(":" + edge["environment"]["EDGEREC_EDGE_DATA_DIR"])]
        assert len(data) == 1, name
        volumes.append(data[0].split(":")[0])
        assert edge["environment"]["EDGEREC_REGIONS"] in ("GB", "DE")
    assert len(set(volumes)) == len(volumes), "two replicas must not share one data directory"


def test_secrets_come_from_the_env_file_and_are_never_written_in_the_stack(stack):
    example = dict(
        line.split("=", 1)
        for line in (COMPOSE / "env.example").read_text().splitlines()
        if line and not line.startswith("#")
    )
    text = (COMPOSE / "compose.yaml").read_text()
    for name in example:
        assert re.search(r"\$\{" + name + r":\?", text), f"{name} must be required from the env file"
    for value in example.values():
        assert value not in text
    assert ".env" in (ROOT / ".gitignore").read_text().split()  # the filled-in copy never lands in git


def test_the_load_balancer_checks_readiness_and_knows_every_edge(stack):
    cfg = (COMPOSE / "haproxy.cfg").read_text()
    assert cfg.count(f"option httpchk GET {CONTRACT['edge']['readiness_path']}") == 2
    for name in _services(stack, "edgerec-edge"):
        assert f"{name}:{CONTRACT['edge']['port']} check" in cfg


@needs(None if shutil.which("haproxy") else "haproxy is not installed (make test installs it)")
def test_haproxy_accepts_its_configuration():
    result = subprocess.run(["haproxy", "-c", "-f", str(COMPOSE / "haproxy.cfg")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@needs(None if shutil.which("promtool") else "promtool is not installed (Debian's prometheus package)")
def test_prometheus_accepts_its_configuration_and_scrapes_every_service(stack):
    result = subprocess.run(
        ["promtool", "check", "config", "--syntax-only", str(COMPOSE / "prometheus.yml")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    config = yaml.safe_load((COMPOSE / "prometheus.yml").read_text())
    targets = {t for job in config["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]}
    expected = {f"{n}:{CONTRACT['edge']['port']}" for n in _services(stack, "edgerec-edge")}
    expected |= {f"{n}:{CONTRACT['origin']['port']}" for n in _services(stack, "edgerec-origin")}
    assert targets == expected
