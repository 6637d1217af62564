"""A real Prometheus (Debian's package) scraping a real origin and edge on loopback through the relabel rules of
infra/prometheus/prometheus.yml, with the SLO rules loaded: the live half of the alert and dashboard checks."""

from __future__ import annotations

import json
import re
import shutil
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pytest
from infra_support import INFRA

from edgerec.cli.process import Service, free_port, http_call, http_json
from tests.conftest import Cluster, Pki, edge_tls_env, make_offer, missing_part

PROMETHEUS_DIR = INFRA / "prometheus"
RULES = PROMETHEUS_DIR / "rules" / "edgerec-slo.yml"
K8S = INFRA / "k8s"
# The name the origin's certificate carries in the cluster (infra/k8s: edgerec-origin-tls), which Prometheus checks.
ORIGIN_SERVICE_NAME = "edgerec-origin.edgerec.svc"


def tool(name: str) -> str:
    """A binary of Debian's prometheus package (`make test` installs it), or skip/fail as the suite is told."""
    path = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else None)
    if path is None:
        missing_part(f"{name} not installed: apt-get install prometheus (the Makefile's {name} target)")
    return path


def sample_names(exposition: str) -> set[str]:
    """Every series name a /metrics text can hold, families with no sample yet included (a labelled counter no
    request has touched shows only its TYPE line)."""
    from prometheus_client.parser import text_string_to_metric_families

    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_count", "_sum", "_created"),
        "summary": ("_count", "_sum", "_created"),
        "info": ("_info",),
    }
    names: set[str] = set()
    for family in text_string_to_metric_families(exposition):
        names.update(family.name + s for s in suffixes.get(family.type, ("",)))
        names.update(s.name for s in family.samples)
    return names


def recorded_names() -> set[str]:
    import yaml

    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {rule["record"] for group in groups for rule in group["rules"] if "record" in rule}


PROMQL_WORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "offset",
    "bool",
    "le",
    "inf",
    "nan",
}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads: identifiers outside label matchers and grouping lists, not
    followed by "(" (functions and aggregations), not keywords."""
    text = re.sub(r'"[^"]*"', " ", expr)
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)  # range selectors
    names = set()
    for match in re.finditer(r"(?<![\w.])[a-zA-Z_:][\w:]*", text):
        word = match.group(0)
        after = text[match.end() :].lstrip()
        if after.startswith("(") or word.lower() in PROMQL_WORDS or re.fullmatch(r"\d+[smhdwy]", word):
            continue
        names.add(word)
    return names


@dataclass
class LivePrometheus:
    url: str
    exported: set[str]  # series names the real edge and origin expose
    edge_region: str  # the `region` label the relabelling gave the edge
    answers: dict[str, int] = field(default_factory=dict)  # what the edge answered, by status

    def query(self, expr: str) -> list[dict[str, Any]]:
        status, _, body = http_call(self.url, "GET", "/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
        answer = json.loads(body)
        assert status == 200 and answer["status"] == "success", f"{expr}: {answer}"
        return answer["data"]["result"]

    def value(self, expr: str) -> float | None:
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else None

    def wait_for(self, expr: str, timeout_s: float = 20.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            result = self.query(expr)
            if result:
                return result
            time.sleep(0.2)
        raise AssertionError(f"Prometheus never answered {expr!r} with a series")


def _pod_template(base: str) -> dict[str, Any]:
    import yaml

    return yaml.safe_load((K8S / "base" / base / "deployment.yaml").read_text())["spec"]["template"]["metadata"]


def _region_label(overlay: str) -> dict[str, str]:
    import yaml

    labels = yaml.safe_load((K8S / "overlays" / overlay / "kustomization.yaml").read_text())["labels"]
    return {k: v for entry in labels for k, v in entry["pairs"].items()}


def _sanitized(name: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_]", "_", name)


def pod_meta_labels(template: dict[str, Any], extra_labels: dict[str, str], port: int, pod: str) -> dict[str, str]:
    """The __meta_kubernetes_pod_* labels Kubernetes discovery would give this pod (its annotations and labels from
    infra/k8s), its port the one the test server listens on."""
    annotations = {**template["annotations"], "prometheus.io/port": str(port)}
    labels = {**template["labels"], **extra_labels}
    meta = {f"__meta_kubernetes_pod_annotation_{_sanitized(k)}": v for k, v in annotations.items()}
    meta.update({f"__meta_kubernetes_pod_label_{_sanitized(k)}": v for k, v in labels.items()})
    meta.update(
        __meta_kubernetes_pod_phase="Running",
        __meta_kubernetes_pod_name=pod,
        __meta_kubernetes_pod_node_name="loopback",
    )
    return meta


def prometheus_config(edge: Service, origin: Service, ca_file: Path) -> dict[str, Any]:
    """infra/prometheus/prometheus.yml with static targets carrying the pods' discovery labels instead of Kubernetes
    discovery, the test's CA, and 1 s intervals."""
    import yaml

    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    config["global"] = {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"}
    config["rule_files"] = [str(RULES)]
    (job,) = config["scrape_configs"]
    assert job.pop("kubernetes_sd_configs"), "the scrape job should discover pods"
    assert job["tls_config"]["server_name"] == ORIGIN_SERVICE_NAME
    job["tls_config"]["ca_file"] = str(ca_file)
    job["static_configs"] = [
        {
            "targets": [f"127.0.0.1:{edge.port}"],
            "labels": pod_meta_labels(_pod_template("edge"), _region_label("region-gb"), edge.port, "edge-gb-0"),
        },
        {
            "targets": [f"127.0.0.1:{origin.port}"],
            "labels": pod_meta_labels(_pod_template("origin"), {}, origin.port, "origin-0"),
        },
    ]
    return config


def _recommend(edge: Service, skus: list[str]) -> int:
    status, _ = http_json(
        edge.url,
        "POST",
        "/v1/recommendations",
        {"region": "GB", "shopper_id": "s-1", "recent_items": skus[:3], "k": 5},
        timeout=10,
    )
    return status


@pytest.fixture(scope="session")
def live_prometheus(
    tmp_path_factory: pytest.TempPathFactory, bundle_dir: Path, catalog_skus: list[str]
) -> Iterator[LivePrometheus]:
    """An origin serving HTTPS with a certificate for its in-cluster name, an edge that answers 503 (no state yet),
    then 200s from the model and from the fallback (a model budget no run meets), and a Prometheus scraping both."""
    binary = tool("prometheus")
    workdir = tmp_path_factory.mktemp("live-prometheus")
    pki = Pki(workdir / "pki")
    cert, key = pki.issue("origin-service", "127.0.0.1", ORIGIN_SERVICE_NAME)
    cluster = Cluster(workdir, bundle_dir)
    cluster.origin.args += ["--tls-cert", str(cert), "--tls-key", str(key)]
    cluster.origin.scheme, cluster.origin.tls = "https", pki.client_context()
    cluster.start_origin()
    prometheus: Service | None = None
    try:
        edge = cluster.start_edge("GB", ready=False, args=["--model-budget-ms", "0.0001"], env=edge_tls_env(pki))
        edge.wait_ready("/healthz")
        config = workdir / "prometheus.yml"
        config.write_text(json.dumps(prometheus_config(edge, cluster.origin, pki.ca_file)))
        port = free_port()
        prometheus = Service(
            name="prometheus",
            port=port,
            log_path=workdir / "logs" / "prometheus.log",
            argv=[
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={workdir / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
        ).start()
        prometheus.wait_ready("/-/ready")
        scrape = {
            name: http_call(svc.url, "GET", "/metrics", ssl_context=svc.tls)[2].decode()
            for name, svc in (("edge", edge), ("origin", cluster.origin))
        }
        live = LivePrometheus(
            prometheus.url,
            sample_names(scrape["edge"]) | sample_names(scrape["origin"]),
            _region_label("region-gb")["edgerec.io/region"],
        )
        # Each series is seen by a scrape before it grows, so that rate() counts every later answer: 503s first
        # (no state yet), then the model's answer that overruns the budget and a fallback, then 200s (mostly
        # fallbacks: each model run reopens the breaker).
        _answer(live, edge, catalog_skus, 503, 'edgerec_requests_total{status="503"}')
        _seed(cluster, catalog_skus, edge)
        _answer(live, edge, catalog_skus, 200, 'edgerec_requests_total{status="200"}', times=1)
        _answer(live, edge, catalog_skus, 200, "edgerec_fallback_total")
        region = f'{{region="{live.edge_region}"}}'
        for ready in (
            f"region:edgerec_recommendation_error_ratio:rate5m{region} > 0 < 1",
            f"region:edgerec_fallback:ratio_rate5m{region} > 0",
            f'ALERTS{{alertname="EdgerecAvailabilityFastBurn", region="{live.edge_region}"}}',
        ):
            live.wait_for(ready)
        time.sleep(1.5)  # one more evaluation of every group, all series in place
        yield live
    finally:
        if prometheus is not None:
            prometheus.stop()
        cluster.stop()


def _answer(live: LivePrometheus, edge: Service, skus: list[str], status: int, seen: str, times: int = 15) -> None:
    """One answer of `status`, wait until the scrape has `seen`, then `times` more answers (counted by status)."""
    first = _recommend(edge, skus)
    assert first == status, (first, status)
    live.wait_for(seen)
    for _ in range(times):
        got = str(_recommend(edge, skus))
        live.answers[got] = live.answers.get(got, 0) + 1


def _seed(cluster: Cluster, skus: list[str], edge: Service) -> None:
    cluster.publish()
    for sku in skus[:20]:
        cluster.put_offer(make_offer(f"GB-{sku}", sku))
    edge.wait_ready("/readyz")
