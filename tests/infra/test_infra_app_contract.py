"""The Terraform modules and Dockerfiles agree with the application, as written in infra/app_contract.json."""

from __future__ import annotations

import re

import pytest
from infra_support import DOCKER


def _environment(container: dict, module=None) -> list[dict]:
    """A container's environment entries; for `concat(local.a, cond ? [] : local.b, ...)`, every entry it may join."""
    env = container.get("environment", [])
    if isinstance(env, str):
        assert module is not None, f"environment is an expression: {env}"
        loc = module.locals()
        env = [e for name in re.findall(r"local\.(\w+)", env) if isinstance(loc.get(name), list) for e in loc[name]]
    return env


def _env_names(container: dict, module=None) -> set[str]:
    return {e["name"] for e in _environment(container, module)}


def _secret_names(container: dict) -> set[str]:
    return {e["name"] for e in container.get("secrets", [])}


def _secret_name(module, key: str, shared=None) -> str:
    """The name of one secret of local.secrets: made for_each by the module's `aws_secretsmanager_secret.this`, or,
    given `shared` (modules/service), passed to its service, whose `aws_secretsmanager_secret.this` makes them."""
    if shared is None:
        secret, secrets = module.resource("aws_secretsmanager_secret"), "${local.secrets}"
    else:
        assert module.module("service")["secrets"] == "${local.secrets}"
        secret, secrets = shared.resource("aws_secretsmanager_secret"), "${var.secrets}"
    assert secret["for_each"] == secrets
    assert secret["name"] == "${var.name}/${each.value.name}"
    return f"${{var.name}}/{module.locals()['secrets'][key]['name']}"


def _healthcheck_url(container: dict) -> str:
    cmd = " ".join(container["healthCheck"]["command"])
    m = re.search(r"https?://127\.0\.0\.1:(\d+)(/\S*?)['\"]", cmd)
    assert m, f"healthcheck does not call a local URL: {cmd}"
    assert "urllib" in cmd and cmd.startswith("CMD python"), "healthcheck must use python's urllib (no curl in slim)"
    return f":{m.group(1)}{m.group(2)}"


# --- edge -------------------------------------------------------------------------------------------


def test_edge_container_listens_on_contract_port(hcl_modules, contract):
    edge = hcl_modules["edge_region"]
    port = contract["edge"]["port"]
    assert edge.locals()["container_port"] == port
    assert edge.module("service")["container_port"] == "${local.container_port}"
    c = edge.locals()["container_definition"]
    assert c["portMappings"][0]["containerPort"] == "${local.container_port}"
    env = {e["name"]: e["value"] for e in _environment(c, edge)}
    assert env[contract["edge"]["env"]["port"]] == "${tostring(local.container_port)}"


def test_edge_alb_checks_readiness_and_container_checks_liveness(hcl_modules, contract):
    edge = hcl_modules["edge_region"]
    assert edge.locals()["readiness_path"] == contract["edge"]["readiness_path"]
    assert edge.locals()["liveness_path"] == contract["edge"]["liveness_path"]
    assert edge.module("service")["health_check_path"] == "${local.readiness_path}"
    c = edge.locals()["container_definition"]
    assert _healthcheck_url(c) == f":{contract['edge']['port']}{contract['edge']['liveness_path']}"


def test_edge_environment_uses_contract_names_and_secrets_come_from_secrets_manager(hcl_modules, contract):
    edge = hcl_modules["edge_region"]
    c = edge.locals()["container_definition"]
    loc = edge.locals()
    always = {e["name"] for e in loc["container_environment"]}
    optional = {e["name"] for n in ("origin_ca_environment", "client_certificate_environment") for e in loc[n]}
    assert always == set(contract["edge"]["env"].values())
    assert optional == set(contract["edge"]["optional_env"].values())
    assert _env_names(c, edge) == always | optional
    assert _secret_names(c) == set(contract["edge"]["secret_env"].values())
    assert not _env_names(c, edge) & _secret_names(c), "a secret is also set as a plain environment variable"


def test_edge_regions_env_joins_markets_with_contract_separator(hcl_modules, contract):
    c = hcl_modules["edge_region"].locals()["container_definition"]
    env = {e["name"]: e["value"] for e in _environment(c, hcl_modules["edge_region"])}
    sep = contract["edge"]["regions_separator"]
    assert env[contract["edge"]["env"]["regions"]] == f'${{join("{sep}", var.markets)}}'


def test_edge_listener_forwards_only_requests_with_cdn_secret_header(hcl_modules, contract):
    edge = hcl_modules["edge_region"]
    assert edge.locals()["cdn_secret_header"] == contract["cdn"]["secret_header"]
    service = edge.module("service")
    assert service["required_header_name"] == "${local.cdn_secret_header}"
    assert service["required_header_values"] == "${var.cdn_secret_header_values}"
    # modules/service: with a required header the listener answers 403 and one rule forwards what carries it.
    shared = hcl_modules["service"]
    assert shared.locals()["required_header"] == "${var.required_header_name != null}"
    listener = shared.resource("aws_lb_listener", "https")
    assert listener["protocol"] == "HTTPS"
    assert listener["default_action"]["type"] == '${local.required_header ? "fixed-response" : "forward"}'
    forbidden = listener["default_action"]["dynamic"]["fixed_response"]
    assert forbidden["for_each"].startswith("${local.required_header ?")
    assert forbidden["content"]["status_code"] in ("403", 403)
    rule = shared.resource("aws_lb_listener_rule", "required_header")
    assert rule["count"] == "${local.required_header ? 1 : 0}"
    header = rule["condition"]["http_header"]
    assert header["http_header_name"] == "${var.required_header_name}"
    assert header["values"] == "${var.required_header_values}"
    assert rule["action"]["type"] == "forward"
    assert shared.variables()["required_header_values"]["sensitive"] is True
    assert edge.variables()["cdn_secret_header_values"]["sensitive"] is True


def test_edge_service_rolls_back_failed_deploys_and_autoscales(hcl_modules):
    shared = hcl_modules["service"]
    svc = shared.resource("aws_ecs_service")
    assert svc["deployment_circuit_breaker"] == {"enable": True, "rollback": True}
    assert svc["deployment_minimum_healthy_percent"] == 100
    policy = shared.resource("aws_appautoscaling_policy")
    assert policy["for_each"] == "${local.autoscaling_policies}"
    spec = policy["target_tracking_scaling_policy_configuration"]["predefined_metric_specification"]
    assert spec["predefined_metric_type"] == "${each.value.metric}"
    policies = shared.locals()["autoscaling_policies"]
    assert "ECSServiceAverageCPUUtilization" in policies and "ALBRequestCountPerTarget" in policies
    # The edge sets both targets, so both policies exist for it.
    service = hcl_modules["edge_region"].module("service")
    assert service["cpu_target_percent"] == "${var.cpu_target_percent}"
    assert service["requests_per_target"] == "${var.requests_per_target}"


def test_edge_data_dir_is_a_writable_volume(hcl_modules, contract):
    c = hcl_modules["edge_region"].locals()["container_definition"]
    env = {e["name"]: e["value"] for e in _environment(c, hcl_modules["edge_region"])}
    assert env[contract["edge"]["env"]["data_dir"]] == "${local.data_dir}"
    assert hcl_modules["edge_region"].module("service")["data_dir"] == "${local.data_dir}"
    _assert_hardened_containers(hcl_modules["service"])


def _assert_hardened_containers(shared) -> None:
    """modules/service gives every container a read-only root, a non-root user and the data volume at data_dir."""
    defaults = shared.locals()["container_defaults"]
    assert defaults["readonlyRootFilesystem"] is True
    assert defaults["user"] == "10001:10001"
    assert "${var.data_dir}" in {m["containerPath"] for m in defaults["mountPoints"]}
    assert shared.locals()["containers"].startswith("${[for c in var.containers : merge(local.container_defaults,")
    assert "jsonencode(local.containers)" in shared.resource("aws_ecs_task_definition")["container_definitions"]


# --- origin -----------------------------------------------------------------------------------------


def test_origin_container_listens_on_contract_port_and_checks_healthz(hcl_modules, contract):
    origin = hcl_modules["origin"]
    assert origin.locals()["container_port"] == contract["origin"]["port"]
    assert origin.locals()["health_path"] == contract["origin"]["liveness_path"]
    assert origin.module("service")["health_check_path"] == "${local.health_path}"
    assert hcl_modules["service"].resource("aws_lb_target_group")["health_check"]["path"] == "${var.health_check_path}"
    assert hcl_modules["service"].resource("aws_lb_target_group")["port"] == "${var.container_port}"
    c = origin.locals()["container_definition"]
    assert c["portMappings"][0]["containerPort"] == "${local.container_port}"
    assert _healthcheck_url(c) == f":{contract['origin']['port']}{contract['origin']['liveness_path']}"


def test_origin_environment_uses_contract_names_and_secrets_come_from_secrets_manager(hcl_modules, contract):
    c = hcl_modules["origin"].locals()["container_definition"]
    env = _env_names(c)
    # Production runs on PostgreSQL: the DSN is set and the SQLite path is not.
    expected = set(contract["origin"]["env"].values()) - {contract["origin"]["env"]["db"]}
    assert env == expected
    assert _secret_names(c) == set(contract["origin"]["secret_env"].values())
    assert not env & _secret_names(c)
    dsn = next(e["value"] for e in c["environment"] if e["name"] == contract["origin"]["env"]["dsn"])
    assert dsn.startswith("postgresql://") and ":${" not in dsn.split("@")[0], "no password in the DSN"
    assert "sslmode=verify-full" in dsn


def test_secrets_are_named_as_in_the_contract(hcl_modules, contract):
    names = contract["secrets"]["names"]
    origin, shared = hcl_modules["origin"], hcl_modules["service"]
    assert _secret_name(origin, "admin_token", shared) == f"${{var.name}}/{names['admin_token']}"
    assert _secret_name(origin, "sync_token", shared) == f"${{var.name}}/{names['sync_token']}"
    cdn = hcl_modules["cdn"]
    assert _secret_name(cdn, "cdn_secret") == f"${{var.name}}/{names['cdn_secret']}"
    sep = contract["secrets"]["value_separator"]
    version = cdn.resource("aws_secretsmanager_secret_version", "cdn_secret")
    assert version["secret_string"] == f'${{join("{sep}", var.cdn_secret_header_values)}}'


def test_origin_secrets_map_to_the_right_env_vars(hcl_modules, contract):
    c = hcl_modules["origin"].locals()["container_definition"]
    secrets = {e["name"]: e["valueFrom"] for e in c["secrets"]}
    env = contract["origin"]["secret_env"]
    assert secrets[env["admin_token"]] == '${module.service.secret_arns["admin_token"]}'
    assert secrets[env["sync_token"]] == '${module.service.secret_arns["sync_token"]}'
    assert secrets[env["db_password"]].endswith(":password::")


# --- cdn --------------------------------------------------------------------------------------------


def test_cdn_injects_secret_header_and_forwards_geo_header(hcl_modules, contract):
    cdn = hcl_modules["cdn"]
    loc = cdn.locals()
    assert loc["cdn_secret_header"] == contract["cdn"]["secret_header"]
    assert loc["geo_headers"] == contract["cdn"]["geo_headers"]
    dist = cdn.resource("aws_cloudfront_distribution")
    header = dist["origin"]["custom_header"]
    assert header == {"name": "${local.cdn_secret_header}", "value": "${var.cdn_secret_header_values[0]}"}
    orp = cdn.resource("aws_cloudfront_origin_request_policy")
    assert "local.geo_headers" in orp["headers_config"]["headers"]["items"]
    assert cdn.variables()["cdn_secret_header_values"]["sensitive"] is True


def test_cdn_honours_origin_cache_control_and_requires_modern_tls(hcl_modules):
    cdn = hcl_modules["cdn"]
    policy = cdn.resource("aws_cloudfront_cache_policy")
    assert policy["min_ttl"] == 0 and policy["default_ttl"] == 0
    dist = cdn.resource("aws_cloudfront_distribution")
    assert dist["viewer_certificate"]["minimum_protocol_version"].startswith("TLSv1.2")
    assert dist["origin"]["custom_origin_config"]["origin_protocol_policy"] == "https-only"
    assert dist["origin"]["custom_origin_config"]["origin_ssl_protocols"] == ["TLSv1.2"]
    assert dist["web_acl_id"] == "${aws_wafv2_web_acl.this.arn}"
    assert "logging_config" in dist


def test_cdn_waf_has_rate_limit_and_managed_rules(hcl_modules):
    acl = hcl_modules["cdn"].resource("aws_wafv2_web_acl")
    rules = acl["rule"] if isinstance(acl["rule"], list) else [acl["rule"]]
    kinds = set()
    for r in rules:
        st = r["statement"]
        if "rate_based_statement" in st:
            kinds.add("rate")
        if "managed_rule_group_statement" in st:
            kinds.add(st["managed_rule_group_statement"]["name"])
    assert {"rate", "AWSManagedRulesCommonRuleSet", "AWSManagedRulesKnownBadInputsRuleSet"} <= kinds


# --- Dockerfiles ------------------------------------------------------------------------------------


def _dockerfile(name: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = (DOCKER / name).read_text()
    logical, buf = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        instr, _, args = buf.partition(" ")
        logical.append((instr.upper(), args.strip()))
        buf = ""
    return logical


def _final_stage(instrs):
    idx = max(i for i, (ins, _) in enumerate(instrs) if ins == "FROM")
    return instrs[idx:]


@pytest.mark.parametrize("service", ["edge", "origin"])
def test_dockerfile_runs_non_root_with_healthcheck_on_contract_port(service, contract):
    instrs = _dockerfile(f"Dockerfile.{service}")
    spec = contract[service]
    for ins, args in instrs:
        if ins == "FROM":
            image = args.split()[0]
            assert image.startswith("python:3.11") and "slim" in image, image
            # By digest (a re-pushed tag cannot change the base), beside a full version tag for the reader.
            assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm@sha256:[0-9a-f]{64}", image), (
                f"pin the base image by a full tag and its digest: {image}"
            )
    final = _final_stage(instrs)
    users = [a for i, a in final if i == "USER"]
    assert users, "final stage sets no USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), f"runs as {user}"
    exposes = [a for i, a in final if i == "EXPOSE"]
    assert exposes == [str(spec["port"])]
    checks = [a for i, a in final if i == "HEALTHCHECK"]
    assert len(checks) == 1
    hc = checks[0]
    assert "urllib" in hc and "curl" not in hc
    assert f"127.0.0.1:{spec['port']}{spec['liveness_path']}" in hc
    cmd = [a for i, a in final if i == "CMD"][-1]
    assert cmd == "[" + ", ".join(f'"{c}"' for c in spec["command"]) + "]"
    build = " ".join(a for i, a in instrs if i == "RUN")
    # The image installs its role's lock, hash-checked, and then edgerec itself without resolving anything anew.
    assert f"pip install --require-hashes -r requirements/{service}.txt" in build
    assert "pip install --no-deps ." in build
    assert (DOCKER.parents[1] / "requirements" / f"{service}.txt").is_file()
    # No `# syntax=` line: it makes every build pull a frontend image, which breaks offline and mirrored builds.
    assert not (DOCKER / f"Dockerfile.{service}").read_text().lstrip().startswith("# syntax=")


def test_both_images_build_on_the_same_base():
    bases = {
        args.split()[0]
        for name in ("edge", "origin")
        for ins, args in _dockerfile(f"Dockerfile.{name}")
        if ins == "FROM"
    }
    assert len(bases) == 1, bases


@pytest.mark.parametrize("service", ["edge", "origin"])
def test_dockerfile_env_defaults_match_contract(service, contract):
    env_lines = " ".join(a for i, a in _final_stage(_dockerfile(f"Dockerfile.{service}")) if i == "ENV")
    assert f"{contract[service]['env']['port']}={contract[service]['port']}" in env_lines
    for name in contract[service].get("secret_env", {}).values():
        assert name not in env_lines, f"secret {name} must not be baked into the image"


def test_dockerignore_keeps_secrets_and_venvs_out_of_the_build_context():
    from infra_support import REPO

    patterns = {
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".git", ".venv", "tests", "infra", ".env", "*.tfstate*"} <= patterns


# --- signed, region-scoped sync ---------------------------------------------------------------------


def test_origin_blob_dir_is_a_local_cache_on_a_writable_volume(hcl_modules, contract):
    # With PostgreSQL the blobs live in the database and EDGEREC_BLOB_DIR is a local cache: a path, not s3://.
    c = hcl_modules["origin"].locals()["container_definition"]
    env = {e["name"]: e["value"] for e in c["environment"]}
    assert env[contract["origin"]["env"]["blob_dir"]] == "${local.blob_dir}"
    loc = hcl_modules["origin"].locals()
    assert loc["blob_dir"] == "${local.data_dir}/blobs" and loc["data_dir"].startswith("/")
    assert hcl_modules["origin"].module("service")["data_dir"] == "${local.data_dir}"
    _assert_hardened_containers(hcl_modules["service"])
    assert env[contract["origin"]["env"]["log_retention"]] == "${var.change_log_retention}"
    assert hcl_modules["origin"].variables()["change_log_retention"]["default"] == "7d"


def test_origin_signing_key_and_region_tokens_are_secrets_named_as_in_the_contract(hcl_modules, contract):
    origin, shared = hcl_modules["origin"], hcl_modules["service"]
    names = contract["secrets"]["names"]
    for key in ("signing_key", "region_tokens"):
        assert _secret_name(origin, key, shared) == f"${{var.name}}/{names[key]}"
    for module in (origin, shared):
        assert not module.resources("aws_secretsmanager_secret_version"), "token and key values are put out of band"
    c = origin.locals()["container_definition"]
    secrets = {e["name"]: e["valueFrom"] for e in c["secrets"]}
    env = contract["origin"]["secret_env"]
    assert secrets[env["signing_key"]] == '${module.service.secret_arns["signing_key"]}'
    assert secrets[env["region_tokens"]] == '${module.service.secret_arns["region_tokens"]}'
    # No origin secret (the all-regions token included) is replicated to the edge regions.
    assert "replica" not in shared.resource("aws_secretsmanager_secret")
    # The execution role reads every one of them (modules/service's execution_secrets policy reads its own secrets
    # and secret_arns).
    _assert_execution_role_reads_secret_arns(shared)


def _assert_execution_role_reads_secret_arns(shared) -> None:
    policy = next(
        b["aws_iam_policy_document"]["execution_secrets"]
        for b in shared.files["main.tf"]["data"]
        if "execution_secrets" in b.get("aws_iam_policy_document", {})
    )
    statements = policy["statement"]
    assert statements[0]["resources"] == "${local.secret_arns}"
    readable = shared.locals()["secret_arns"]
    assert "for s in aws_secretsmanager_secret.this : s.arn" in readable and "var.secret_arns" in readable
    assert statements[0]["actions"] == ["secretsmanager:GetSecretValue"]


def test_each_edge_region_has_its_own_sync_token_secret(hcl_modules, contract):
    edge, shared = hcl_modules["edge_region"], hcl_modules["service"]
    assert (
        _secret_name(edge, "sync_token", shared)
        == f"${{var.name}}/{contract['secrets']['names']['sync_token']}-${{local.region}}"
    )
    assert edge.locals()["sync_token_secret_name"] == "${var.name}/${local.secrets.sync_token.name}"
    secret = shared.resource("aws_secretsmanager_secret")
    assert secret["kms_key_id"] == "${module.kms_key.arn}"
    assert "replica" not in secret
    c = edge.locals()["container_definition"]
    secrets = {e["name"]: e["valueFrom"] for e in c["secrets"]}
    assert secrets[contract["edge"]["secret_env"]["sync_token"]] == '${module.service.secret_arns["sync_token"]}'
    assert "sync_token_secret_arn" not in edge.variables()
    assert not edge.resources("aws_secretsmanager_secret_version"), "token values are put out of band"


def test_edge_verifies_the_origin_key_and_stays_ready_when_the_origin_is_down(hcl_modules, contract):
    edge = hcl_modules["edge_region"]
    c = edge.locals()["container_definition"]
    env = {e["name"]: e["value"] for e in _environment(c, edge)}
    assert env[contract["edge"]["env"]["origin_public_key"]] == '${join(",", var.origin_public_keys)}'
    assert env[contract["edge"]["env"]["max_staleness_s"]] == "${tostring(var.max_staleness_s)}"
    variables = edge.variables()
    assert "default" not in variables["origin_public_keys"], "the edge must be told which key to trust"
    assert variables["origin_public_keys"].get("sensitive") is not True, "a public key is not a secret"
    assert variables["max_staleness_s"]["default"] == 0
    assert env[contract["edge"]["env"]["untrusted_cdn_headers"]] == "${var.untrusted_cdn_headers}"
    assert variables["untrusted_cdn_headers"]["default"] == "refuse"


def test_cdn_caches_the_anonymous_get_by_country_and_recommendation_query_only(hcl_modules, contract):
    cdn = hcl_modules["cdn"]
    loc = cdn.locals()
    assert loc["recommendation_query_strings"] == ["region", "k", "slot", "device"]
    key = cdn.resource("aws_cloudfront_cache_policy")["parameters_in_cache_key_and_forwarded_to_origin"]
    assert key["headers_config"]["headers"]["items"] == "${local.geo_headers}"
    assert key["query_strings_config"]["query_string_behavior"] == "whitelist"
    assert key["query_strings_config"]["query_strings"]["items"] == "${local.recommendation_query_strings}"
    assert key["cookies_config"]["cookie_behavior"] == "none"
    # Nothing reaches the edge that is not in the cache key (no poisoning by an extra query parameter).
    orp = cdn.resource("aws_cloudfront_origin_request_policy")
    assert orp["query_strings_config"]["query_string_behavior"] == "none"
    assert orp["cookies_config"]["cookie_behavior"] == "none"
    dist = cdn.resource("aws_cloudfront_distribution")
    behaviours = dist["ordered_cache_behavior"]
    behaviours = behaviours if isinstance(behaviours, list) else [behaviours]
    reco = next(b for b in behaviours if b["path_pattern"] == "/v1/recommendations")
    assert "POST" in reco["allowed_methods"]
    assert reco["cached_methods"] == ["GET", "HEAD"], "POST is never cached"
    assert reco["cache_policy_id"] == "${aws_cloudfront_cache_policy.this.id}"
    assert dist["default_cache_behavior"]["allowed_methods"] == ["GET", "HEAD", "OPTIONS"]


# --- production mode and TLS on every hop -----------------------------------------------------------


def test_both_services_run_in_production_mode_listening_on_their_task_address(hcl_modules, contract):
    for service, module_name in (("edge", "edge_region"), ("origin", "origin")):
        module = hcl_modules[module_name]
        env = {e["name"]: e["value"] for e in _environment(module.locals()["container_definition"], module)}
        assert env[contract[service]["env"]["environment"]] == contract["production"]["environment_value"], service
        assert env[contract[service]["env"]["host"]] == "0.0.0.0", f"{service}: the ALB reaches the task's ENI"


def test_origin_serves_tls_itself_behind_an_https_target_group(hcl_modules, contract):
    origin = hcl_modules["origin"]
    loc = origin.locals()
    assert origin.module("service")["target_protocol"] == "HTTPS"
    tg = hcl_modules["service"].resource("aws_lb_target_group")
    assert tg["protocol"] == "${var.target_protocol}" and tg["health_check"]["protocol"] == "${var.target_protocol}"
    c = loc["container_definition"]
    env = {e["name"]: e["value"] for e in c["environment"]}
    names = contract["origin"]["env"]
    # The origin terminates TLS itself, so production mode would refuse to start without the key pair.
    assert env[names["behind_tls_proxy"]] == "false"
    assert (
        env[names["tls_cert_file"]] == "${local.tls_cert_file}"
        and env[names["tls_key_file"]] == "${local.tls_key_file}"
    )
    assert loc["tls_dir"] == "${local.data_dir}/tls"
    assert "https://127.0.0.1" in " ".join(c["healthCheck"]["command"])
    # tls-init makes a per-task self-signed pair on the shared data volume and must succeed first.
    init = loc["tls_init_container"]
    assert init["name"] == contract["tls_init"]["container"] and init["essential"] is False
    assert "secrets" not in init, "the origin's TLS key is made in the task, never delivered"
    assert "mountPoints" not in init, "modules/service mounts the data volume (tls_dir is on it) in every container"
    assert c["dependsOn"] == [{"containerName": "${local.tls_init_container.name}", "condition": "SUCCESS"}]
    assert "${local.tls_init_container}" in origin.module("service")["containers"]
    listener = hcl_modules["service"].resource("aws_lb_listener", "https")
    assert listener["protocol"] == "HTTPS" and listener["ssl_policy"].startswith("ELBSecurityPolicy-TLS13")


def test_edges_reach_the_origin_over_https_and_get_tls_material_from_tls_init(hcl_modules, hcl_example, contract):
    assert hcl_modules["origin"].outputs()["origin_url"]["value"] == "https://${var.origin_domain_name}"
    edge = hcl_modules["edge_region"]
    assert "https://" in str(edge.variables()["origin_url"]["validation"])
    for block in hcl_example.blocks("module"):
        for name, body in block.items():
            if body["source"] == "../../modules/edge_region":
                assert body["origin_url"] == "${module.origin.origin_url}", name
    loc = edge.locals()
    prefix, tls = contract["tls_init"]["pem_prefix"], contract["tls_init"]
    # Each PEM_<NAME> is written to <tls_dir>/<name>.pem: the file settings point at those names.
    files = {
        loc[e["value"].removeprefix("${local.").removesuffix("}")]: e["name"]
        for n in ("origin_ca_environment", "client_certificate_environment")
        for e in loc[n]
    }
    pem_vars = [e["name"] for e in loc["tls_init_origin_ca_environment"]] + [
        e["name"] for e in loc["tls_init_client_certificate_secrets"]
    ]
    assert all(v.startswith(prefix) for v in pem_vars)
    written = {loc[f"{v[len(prefix) :].lower()}_file"] for v in pem_vars}
    assert written == set(files), (written, files)
    assert loc["origin_ca_file"] == "${local.tls_dir}/origin_ca.pem" and loc["tls_dir"] == "${local.data_dir}/tls"
    # The client certificate's key arrives as an ECS secret (JSON keys of one secret), never as a plain value.
    secrets = {e["name"]: e["valueFrom"] for e in loc["tls_init_client_certificate_secrets"]}
    for key, var in tls["edge_secret_json_keys"].items():
        assert secrets[var] == f'${{coalesce(var.client_certificate_secret_arn, "-")}}:{key}::'
    init = loc["tls_init_container"]
    assert init["secrets"] == "${local.client_certificate ? local.tls_init_client_certificate_secrets : []}"
    assert not set(secrets) & {e["name"] for e in loc["tls_init_origin_ca_environment"]}
    assert not set(secrets) & _env_names(loc["container_definition"], edge)
    assert [e["name"] for e in loc["tls_init_origin_ca_environment"]] == list(tls["edge_env"].values())
    assert "var.client_certificate_secret_arn" in edge.module("service")["secret_arns"]
    _assert_execution_role_reads_secret_arns(hcl_modules["service"])
    assert edge.variables()["client_certificate_secret_arn"]["default"] is None
    assert edge.variables()["origin_ca_bundle"]["default"] is None
    assert hcl_modules["origin"].variables()["client_ca_bundle_s3"]["default"] is None
