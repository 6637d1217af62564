"""The Kubernetes manifests (infra/k8s): rendered offline by `kubectl kustomize`, validated against the Kubernetes
schemas (kubernetes-validate), and read as objects to check them against infra/app_contract.json."""

from __future__ import annotations

import re
import shutil
import subprocess
from functools import lru_cache
from pathlib import Path
from typing import Any

import pytest
from infra_support import DOCKER, INFRA, REPO

from tests.conftest import missing_part

K8S = INFRA / "k8s"
REGIONS = ("gb", "de")
OVERLAYS = ("origin", *(f"region-{r}" for r in REGIONS))
# The oldest Kubernetes minor the manifests are meant for (matchLabelKeys, unhealthyPodEvictionPolicy) and the
# newest schema kubernetes-validate ships.
K8S_VERSIONS = ("1.29.0", "latest")


@lru_cache(maxsize=None)
def _render_text(directory: str) -> str:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        missing_part("kubectl not on PATH: it renders the kustomizations (`kubectl kustomize`)")
    proc = subprocess.run([kubectl, "kustomize", directory], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"kubectl kustomize {directory} failed:\n{proc.stderr}"
    return proc.stdout


def render(directory: Path) -> list[dict[str, Any]]:
    import yaml

    return [doc for doc in yaml.safe_load_all(_render_text(str(directory))) if doc]


def one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {[o['metadata']['name'] for o in found]}"
    return found[0]


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    return only


def environment(objects: list[dict[str, Any]], deployment: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every variable the container gets, by name: {"value": ...} from a ConfigMap it names (envFrom) or the env list,
    or {"secret": (name, key)} / {"configmap": (name, key)} for one taken from an object outside the build."""
    maps = {o["metadata"]["name"]: o.get("data", {}) for o in objects if o["kind"] == "ConfigMap"}
    env: dict[str, dict[str, Any]] = {}
    spec = container(deployment)
    for source in spec.get("envFrom", []):
        name = source["configMapRef"]["name"]
        assert name in maps, f"envFrom names ConfigMap {name}, which the build does not make"
        env.update({k: {"value": v} for k, v in maps[name].items()})
    for var in spec.get("env", []):
        if "value" in var:
            env[var["name"]] = {"value": var["value"]}
        elif "secretKeyRef" in var["valueFrom"]:
            ref = var["valueFrom"]["secretKeyRef"]
            env[var["name"]] = {"secret": (ref["name"], ref["key"]), "optional": ref.get("optional", False)}
        else:
            ref = var["valueFrom"]["configMapKeyRef"]
            env[var["name"]] = {"configmap": (ref["name"], ref["key"])}
    return env


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Whether a label selector (matchLabels form, or a Service's plain map) matches these labels."""
    wanted = selector.get("matchLabels", selector) if selector else {}
    assert "matchExpressions" not in selector, "the checks here read matchLabels only"
    return all(labels.get(k) == v for k, v in wanted.items())


def pod_labels(deployment: dict[str, Any]) -> dict[str, str]:
    return deployment["spec"]["template"]["metadata"]["labels"]


def dockerfile_uid(service: str) -> int:
    users = re.findall(r"^USER\s+(\d+)", (DOCKER / f"Dockerfile.{service}").read_text(), re.M)
    return int(users[-1])


def dockerfile_image_name(service: str) -> str:
    """The name the Dockerfile's build comment tags the image with (`docker build ... -t NAME:<git-sha> .`)."""
    match = re.search(r"-t\s+([a-z0-9-]+):", (DOCKER / f"Dockerfile.{service}").read_text())
    assert match, f"Dockerfile.{service} names no image"
    return match.group(1)


def stop_budget(objects: list[dict[str, Any]], deployment: dict[str, Any]) -> tuple[float, float]:
    """(drain window, shutdown timeout) the container runs with: its EDGEREC_DRAIN_S and EDGEREC_SHUTDOWN_TIMEOUT_S,
    read by the app's own settings model (defaults, range checks and the check that the window fits included)."""
    from edgerec.core.shutdown import StopSettings

    env = environment(objects, deployment)
    names = {"drain": "EDGEREC_DRAIN_S", "shutdown_timeout": "EDGEREC_SHUTDOWN_TIMEOUT_S"}
    settings = StopSettings(**{field: env[var]["value"] for field, var in names.items() if var in env})
    return settings.drain, settings.shutdown_timeout


def assert_grace_covers_the_stop(objects: list[dict[str, Any]]) -> None:
    """Kubernetes SIGKILLs a pod terminationGracePeriodSeconds after its deletion began, a preStop hook included:
    the hook (if any) and the app's whole stop (its shutdown timeout: the drain window, the requests in flight, the
    last flush) must end before. The drain window must outlast the readiness probe's detection of the 503, so that
    whatever routes by readiness has stopped sending before the server stops accepting."""
    deployment = one(objects, "Deployment")
    drain_s, timeout_s = stop_budget(objects, deployment)
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    spec = container(deployment)
    pre_stop = spec.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command")
    pause = float(pre_stop[1]) if pre_stop and pre_stop[0] == "sleep" else 0.0
    assert not pre_stop or pause, f"a preStop hook of unknown length: {pre_stop}"
    assert grace > pause + timeout_s, (grace, pause, timeout_s)
    probe = spec["readinessProbe"]
    assert probe["httpGet"]["path"] == "/readyz"
    assert drain_s >= probe["periodSeconds"] * probe.get("failureThreshold", 3), (drain_s, probe)


@pytest.fixture(scope="module")
def edges() -> dict[str, list[dict[str, Any]]]:
    return {region: render(K8S / "overlays" / f"region-{region}") for region in REGIONS}


@pytest.fixture(scope="module")
def origin() -> list[dict[str, Any]]:
    return render(K8S / "overlays" / "origin")


# --- rendering and schemas ------------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", [*OVERLAYS, "."], ids=[*OVERLAYS, "all"])
def test_every_overlay_renders_offline_into_named_objects(overlay):
    objects = render(K8S / "overlays" / overlay if overlay != "." else K8S)
    kinds = {o["kind"] for o in objects}
    assert {"Deployment", "Service", "PodDisruptionBudget", "NetworkPolicy", "ConfigMap"} <= kinds
    for obj in objects:
        assert obj["metadata"]["name"]
        assert obj["kind"] == "Namespace" or obj["metadata"].get("namespace") == "edgerec", obj["metadata"]


def test_the_whole_set_holds_each_overlay_once_without_clashing_names():
    objects = render(K8S)
    keys = [(o["kind"], o["metadata"]["name"]) for o in objects]
    assert len(keys) == len(set(keys))
    assert {name for kind, name in keys if kind == "Deployment"} == {
        "edgerec-origin",
        *(f"edgerec-edge-{r}" for r in REGIONS),
    }


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_rendered_objects_validate_against_the_kubernetes_schemas(version):
    kubernetes_validate = _kubernetes_validate()
    version = kubernetes_validate.latest_version() if version == "latest" else version
    objects = render(K8S)
    for obj in objects:
        # strict: an unknown or misspelt field fails as well as a wrong type.
        kubernetes_validate.validate(obj, version, strict=True)
    assert len(objects) >= 20


def test_schema_validation_refuses_a_misspelt_field_and_a_wrong_type(origin):
    kubernetes_validate = _kubernetes_validate()
    import copy

    misspelt = copy.deepcopy(one(origin, "Deployment"))
    container(misspelt)["readinesProbe"] = container(misspelt).pop("readinessProbe")
    wrong_type = copy.deepcopy(one(origin, "Deployment"))
    container(wrong_type)["ports"][0]["containerPort"] = "eighty-eighty"
    for broken in (misspelt, wrong_type):
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(broken, kubernetes_validate.latest_version(), strict=True)


def _kubernetes_validate():
    try:
        import kubernetes_validate
    except ImportError:
        missing_part("kubernetes-validate not installed: pip install -e '.[infra]'")
    return kubernetes_validate


# --- the edge against the app contract ------------------------------------------------------------------------


@pytest.mark.parametrize("region", REGIONS)
def test_edge_port_probes_command_and_scrape_annotations_follow_the_contract(edges, contract, region):
    spec = contract["edge"]
    deployment = one(edges[region], "Deployment")
    c = container(deployment)
    assert c["command"] == spec["command"]
    assert [(p["name"], p["containerPort"]) for p in c["ports"]] == [("http", spec["port"])]
    assert c["readinessProbe"]["httpGet"]["path"] == spec["readiness_path"]
    assert c["livenessProbe"]["httpGet"]["path"] == spec["liveness_path"]
    assert c["startupProbe"]["httpGet"]["path"] == spec["liveness_path"]
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert c[probe]["httpGet"]["port"] == "http"
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(spec["port"])
    assert annotations["prometheus.io/path"] == spec["metrics_path"]
    service = one(edges[region], "Service")
    assert [(p["port"], p["targetPort"]) for p in service["spec"]["ports"]] == [(spec["port"], "http")]


@pytest.mark.parametrize("region", REGIONS)
def test_edge_environment_uses_the_contract_names_with_secrets_from_secrets(edges, contract, region):
    spec = contract["edge"]
    env = environment(edges[region], one(edges[region], "Deployment"))
    assert set(spec["env"].values()) <= set(env), set(spec["env"].values()) - set(env)
    for key, name in spec["secret_env"].items():
        assert "secret" in env[name], f"{name} must come from a Secret"
        secret, secret_key = env[name]["secret"]
        assert secret_key == contract["secrets"]["names"].get(key, key.replace("_", "-"))
    assert env["EDGEREC_SYNC_TOKEN"]["secret"][0] == f"edgerec-edge-{region}", "each region has its own token"
    values = {k: v["value"] for k, v in env.items() if "value" in v}
    assert values[spec["env"]["environment"]] == contract["production"]["environment_value"]
    assert values[spec["env"]["port"]] == str(spec["port"])
    assert values[spec["env"]["host"]] == "0.0.0.0"
    assert values[spec["env"]["regions"]].split(spec["regions_separator"]) == [region.upper()]
    # Production mode refuses an http:// origin; the edge verifies it against the mounted CA.
    assert values[spec["env"]["origin_url"]].startswith("https://edgerec-origin.edgerec.svc:")
    ca_file = values[spec["optional_env"]["origin_ca_file"]]
    assert any(
        ca_file.startswith(m["mountPath"] + "/")
        for m in container(one(edges[region], "Deployment"))["volumeMounts"]
        if m["name"] == "origin-ca"
    )
    _names_are_documented(env)


def _names_are_documented(env: dict[str, Any]) -> None:
    """A variable the app does not know would be ignored silently: each must be in docs/configuration.md."""
    documented = (REPO / "docs" / "configuration.md").read_text()
    for name in env:
        assert f"`{name}`" in documented, f"{name} is not a setting of the app (docs/configuration.md)"


@pytest.mark.parametrize("region", REGIONS)
def test_edge_runs_as_the_image_user_on_a_read_only_root_with_a_writable_data_dir(edges, contract, region):
    deployment = one(edges[region], "Deployment")
    pod, c = deployment["spec"]["template"]["spec"], container(deployment)
    uid = dockerfile_uid("edge")
    assert uid == 10001
    _restricted(pod, c, uid)
    data_dir = environment(edges[region], deployment)[contract["edge"]["env"]["data_dir"]]["value"]
    assert f"EDGEREC_EDGE_DATA_DIR={data_dir}" in (DOCKER / "Dockerfile.edge").read_text()
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts[data_dir]] and "emptyDir" in volumes[mounts["/tmp"]]
    assert pod["automountServiceAccountToken"] is False


def _restricted(pod: dict[str, Any], c: dict[str, Any], uid: int) -> None:
    """The "restricted" Pod Security Standard, which the namespace enforces, and a read-only root."""
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == uid and pod["securityContext"]["fsGroup"] == uid
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    sc = c["securityContext"]
    assert sc["runAsUser"] == uid and sc["runAsNonRoot"] is True
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"] and "add" not in sc["capabilities"]


@pytest.mark.parametrize("region", REGIONS)
def test_edge_fleet_survives_a_zone_a_drain_and_load(edges, region):
    objects = edges[region]
    deployment = one(objects, "Deployment")
    pods = pod_labels(deployment)
    assert deployment["spec"]["replicas"] >= 2
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    spread = {t["topologyKey"]: t for t in deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]}
    zone = spread["topology.kubernetes.io/zone"]
    assert zone["maxSkew"] == 1 and zone["whenUnsatisfiable"] == "DoNotSchedule"
    assert selects(zone["labelSelector"], pods)
    pdb = one(objects, "PodDisruptionBudget")
    assert selects(pdb["spec"]["selector"], pods)
    assert pdb["spec"].get("maxUnavailable") == 1
    hpa = one(objects, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    assert hpa["spec"]["minReplicas"] >= 2 and hpa["spec"]["maxReplicas"] > hpa["spec"]["minReplicas"]
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu" and 0 < metric["resource"]["target"]["averageUtilization"] < 100
    resources = container(deployment)["resources"]
    for part in ("cpu", "memory"):
        assert resources["requests"][part] and resources["limits"][part]


@pytest.mark.parametrize("region", REGIONS)
def test_edge_grace_period_covers_the_drain_window_and_the_shutdown_timeout(edges, region):
    assert_grace_covers_the_stop(edges[region])
    drain_s, timeout_s = stop_budget(edges[region], one(edges[region], "Deployment"))
    assert (drain_s, timeout_s) == (10, 25)  # as the comments of base/edge say


def test_origin_grace_period_covers_the_drain_window_and_the_shutdown_timeout(origin):
    assert_grace_covers_the_stop(origin)


def test_the_grace_check_refuses_a_pod_killed_before_its_stop_ends(edges):
    import copy

    objects = copy.deepcopy(edges["gb"])
    deployment = one(objects, "Deployment")
    deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = 25  # = the shutdown timeout
    with pytest.raises(AssertionError):
        assert_grace_covers_the_stop(objects)
    deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = 30
    container(deployment)["lifecycle"] = {"preStop": {"exec": {"command": ["sleep", "10"]}}}  # 10 + 25 > 30
    with pytest.raises(AssertionError):
        assert_grace_covers_the_stop(objects)


def test_each_region_is_a_fleet_of_its_own(edges):
    gb, de = (one(edges[r], "Deployment") for r in REGIONS)
    for region, other in (("gb", de), ("de", gb)):
        objects = edges[region]
        mine = one(objects, "Deployment")
        for selector in (
            mine["spec"]["selector"],
            one(objects, "Service")["spec"]["selector"],
            one(objects, "PodDisruptionBudget")["spec"]["selector"],
        ):
            assert selects(selector, pod_labels(mine)) and not selects(selector, pod_labels(other))
        assert pod_labels(mine)["edgerec.io/region"] == region


def test_images_are_the_ones_the_dockerfiles_build_with_a_tag_set_by_kustomize(edges, origin):
    for objects, service in [(origin, "origin"), *((edges[r], "edge") for r in REGIONS)]:
        image = container(one(objects, "Deployment"))["image"]
        name, _, tag = image.rpartition(":")
        assert name == dockerfile_image_name(service), image
        assert tag and tag != "latest", image


# --- the origin against the app contract ----------------------------------------------------------------------


def test_origin_port_probes_and_user_follow_the_contract(origin, contract):
    spec = contract["origin"]
    deployment = one(origin, "Deployment")
    c = container(deployment)
    assert c["command"] == spec["command"]
    assert [p["containerPort"] for p in c["ports"]] == [spec["port"]]
    assert c["livenessProbe"]["httpGet"]["path"] == spec["liveness_path"]
    assert c["startupProbe"]["httpGet"]["path"] == spec["liveness_path"]
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    # The origin serves TLS itself (production mode, not behind a TLS proxy): the probes speak HTTPS.
    assert {c[p]["httpGet"]["scheme"] for p in ("livenessProbe", "readinessProbe", "startupProbe")} == {"HTTPS"}
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(spec["port"]) and annotations["prometheus.io/scheme"] == "https"
    _restricted(deployment["spec"]["template"]["spec"], c, dockerfile_uid("origin"))
    assert [p["port"] for p in one(origin, "Service")["spec"]["ports"]] == [spec["port"]]


def test_origin_environment_uses_the_contract_names_with_the_dsn_and_secrets_from_secrets(origin, contract):
    spec = contract["origin"]
    deployment = one(origin, "Deployment")
    env = environment(origin, deployment)
    # EDGEREC_ORIGIN_DB is the SQLite file: unused with PostgreSQL, so not set.
    wanted = {name for key, name in spec["env"].items() if key != "db"}
    assert wanted <= set(env), wanted - set(env)
    assert spec["env"]["db"] not in env
    for key, name in spec["secret_env"].items():
        assert "secret" in env[name], f"{name} must come from a Secret"
        if key in contract["secrets"]["names"]:
            assert env[name]["secret"] == ("edgerec-origin", contract["secrets"]["names"][key])
    assert env[spec["env"]["dsn"]]["secret"] == ("edgerec-origin-db", "dsn")
    assert env[spec["secret_env"]["db_password"]]["secret"] == ("edgerec-origin-db", "password")
    values = {k: v["value"] for k, v in env.items() if "value" in v}
    assert values[spec["env"]["environment"]] == contract["production"]["environment_value"]
    assert values[spec["env"]["behind_tls_proxy"]] == "false"
    assert values[spec["env"]["port"]] == str(spec["port"])
    tls = {m["mountPath"] for m in container(deployment)["volumeMounts"] if m["name"] == "tls"}
    for key in ("tls_cert_file", "tls_key_file"):
        assert Path(values[spec["env"][key]]).parent.as_posix() in tls
    _names_are_documented(env)


def test_origin_keeps_serving_through_a_drain(origin):
    deployment = one(origin, "Deployment")
    assert deployment["spec"]["replicas"] >= 2
    pdb = one(origin, "PodDisruptionBudget")
    assert selects(pdb["spec"]["selector"], pod_labels(deployment)) and pdb["spec"]["minAvailable"] >= 1
    assert pdb["spec"]["minAvailable"] < deployment["spec"]["replicas"], "a PDB no drain can satisfy blocks upgrades"
    spread = deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert any(t["topologyKey"] == "topology.kubernetes.io/zone" for t in spread)


# --- network policies -----------------------------------------------------------------------------------------

KUBE_DNS = {"k8s-app": "kube-dns"}


def _peer_kind(peer: dict[str, Any], origin_pods: dict[str, str]) -> str:
    if "ipBlock" in peer:
        return "external"
    namespace = peer.get("namespaceSelector")
    pods = peer.get("podSelector")
    kube_system = {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}}
    if namespace == kube_system and pods == {"matchLabels": KUBE_DNS}:
        return "dns"
    if namespace is None and pods is not None and selects(pods, origin_pods):
        return "origin"
    return f"other: {peer}"


def _ports(rule: dict[str, Any]) -> set[tuple[int, str]]:
    return {(p["port"], p["protocol"]) for p in rule["ports"]}


@pytest.mark.parametrize("region", REGIONS)
def test_edges_may_talk_only_to_the_origin_and_dns(edges, origin, contract, region):
    origin_pods = pod_labels(one(origin, "Deployment"))
    policy = one(edges[region], "NetworkPolicy")
    assert selects(policy["spec"]["podSelector"], pod_labels(one(edges[region], "Deployment")))
    assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    reached = set()
    for rule in policy["spec"]["egress"]:
        assert rule.get("to") and rule.get("ports"), "an egress rule without peers or ports allows everything"
        for peer in rule["to"]:
            kind = _peer_kind(peer, origin_pods)
            reached.add(kind)
            expected = {"origin": {(contract["origin"]["port"], "TCP")}, "dns": {(53, "UDP"), (53, "TCP")}}
            assert kind in expected and _ports(rule) == expected[kind], (kind, rule)
    assert reached == {"origin", "dns"}
    (ingress,) = policy["spec"]["ingress"]
    assert _ports(ingress) == {(contract["edge"]["port"], "TCP")}


def test_the_origin_may_talk_only_to_its_database_nats_and_dns_and_hears_every_region(origin, edges, contract):
    deployment = one(origin, "Deployment")
    policy = one(origin, "NetworkPolicy")
    assert selects(policy["spec"]["podSelector"], pod_labels(deployment))
    assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    for rule in policy["spec"]["egress"]:
        assert rule.get("to") and rule.get("ports")
        kinds = {_peer_kind(peer, {}) for peer in rule["to"]}
        assert kinds in ({"external"}, {"dns"}), rule
        assert _ports(rule) <= ({(5432, "TCP"), (4222, "TCP")} if kinds == {"external"} else {(53, "UDP"), (53, "TCP")})
    (ingress,) = policy["spec"]["ingress"]
    assert _ports(ingress) == {(contract["origin"]["port"], "TCP")}
    for region in REGIONS:
        edge_pods = pod_labels(one(edges[region], "Deployment"))
        assert any(
            "podSelector" in p and "namespaceSelector" not in p and selects(p["podSelector"], edge_pods)
            for p in ingress["from"]
        ), f"edges of {region} cannot reach the origin"


# --- what the operator creates, documented --------------------------------------------------------------------


def test_every_secret_and_config_map_outside_the_build_is_documented(edges, origin):
    """Secrets are never committed: the docs must say how to make each one the pods name, with its keys."""
    docs = (REPO / "docs" / "operations.md").read_text()
    section = docs.split("## Kubernetes", 1)[1].split("\n## ", 1)[0]
    built = {
        o["metadata"]["name"]
        for objects in [origin, *edges.values()]
        for o in objects
        if o["kind"] in ("Secret", "ConfigMap")
    }
    needed: set[tuple[str, str]] = set()
    for objects in [origin, *edges.values()]:
        deployment = one(objects, "Deployment")
        for var in environment(objects, deployment).values():
            needed |= {var[k] for k in ("secret", "configmap") if k in var}
        for volume in deployment["spec"]["template"]["spec"]["volumes"]:
            if "secret" in volume:
                needed.add((volume["secret"]["secretName"], "tls.crt"))
            if "configMap" in volume:
                needed.add((volume["configMap"]["name"], "ca.crt"))
    for name, key in sorted(needed):
        assert name not in built, f"{name} is made by the build: it must not hold a secret"
        assert f"`{name}`" in section and key in section, f"docs/operations.md: how to create {name} ({key})?"
