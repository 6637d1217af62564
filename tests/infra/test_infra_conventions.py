"""terraform-aws-modules conventions and the no-secret-in-code/outputs rules, checked on the parsed HCL."""

from __future__ import annotations

import re

import pytest
from infra_support import ENVS, MODULE_NAMES, MODULES, TERRAFORM

ALL_DIRS = [MODULES / m for m in MODULE_NAMES] + [ENVS / "example"]
SECRETISH = re.compile(r"secret_string|password|token_value|\.cdn_secret_header_values|random_password", re.I)


@pytest.mark.parametrize("name", MODULE_NAMES)
def test_module_has_standard_files_and_readme(name):
    d = MODULES / name
    for f in ("versions.tf", "variables.tf", "outputs.tf", "main.tf", "README.md"):
        assert (d / f).is_file(), f"{name}/{f} missing"


@pytest.mark.parametrize("name", MODULE_NAMES)
def test_module_pins_terraform_and_provider_versions(hcl_modules, name):
    tf_blocks = hcl_modules[name].files["versions.tf"]["terraform"]
    tf = tf_blocks[0]
    assert tf["required_version"].startswith(">=")
    aws = (
        tf["required_providers"]["aws"]
        if isinstance(tf["required_providers"], dict)
        else tf["required_providers"][0]["aws"]
    )
    assert aws["source"] == "hashicorp/aws"
    assert ">=" in aws["version"] and "<" in aws["version"].replace(">=", "")


@pytest.mark.parametrize("name", MODULE_NAMES)
def test_every_variable_has_type_and_description(hcl_modules, name):
    for var, body in hcl_modules[name].variables().items():
        assert body.get("description"), f"{name}: variable {var} has no description"
        assert body.get("type"), f"{name}: variable {var} has no type"


@pytest.mark.parametrize("name", MODULE_NAMES)
def test_secret_inputs_are_sensitive_and_have_no_default(hcl_modules, name):
    for var, body in hcl_modules[name].variables().items():
        if "secret_header_values" in var:
            assert body.get("sensitive") is True, var
            assert "default" not in body, var


@pytest.mark.parametrize("path", ALL_DIRS, ids=lambda p: p.relative_to(TERRAFORM).as_posix())
def test_no_output_exposes_a_secret(path):
    from infra_support import HclDir

    for name, body in HclDir(path).outputs().items():
        value = str(body.get("value", ""))
        assert not SECRETISH.search(value), f"output {name} exposes {value}"
        assert body.get("description"), f"output {name} has no description"


@pytest.mark.parametrize("name", MODULE_NAMES)
def test_every_taggable_resource_is_tagged(hcl_modules, name):
    untaggable = {
        "aws_kms_alias",
        "aws_s3_bucket_ownership_controls",
        "aws_s3_bucket_public_access_block",
        "aws_s3_bucket_versioning",
        "aws_s3_bucket_server_side_encryption_configuration",
        "aws_s3_bucket_logging",
        "aws_s3_bucket_lifecycle_configuration",
        "aws_s3_bucket_policy",
        "aws_iam_role_policy_attachment",
        "aws_iam_role_policy",
        "aws_route53_record",
        "aws_appautoscaling_policy",
        "aws_secretsmanager_secret_version",
        "aws_wafv2_web_acl_logging_configuration",
        "aws_cloudfront_cache_policy",
        "aws_cloudfront_function",
        "aws_cloudfront_origin_request_policy",
        "aws_cloudfront_response_headers_policy",
    }
    for block in hcl_modules[name].blocks("resource"):
        for rtype, instances in block.items():
            if rtype in untaggable:
                continue
            for rname, body in instances.items():
                assert body.get("tags") == "${local.tags}", f"{name}: {rtype}.{rname} is not tagged"


def test_no_literal_secret_in_terraform_code():
    pattern = re.compile(r'(secret_string|password|token)\s*=\s*"[^"$]{8,}"', re.I)
    for tf in TERRAFORM.rglob("*.tf"):
        for m in pattern.finditer(tf.read_text()):
            pytest.fail(f"literal secret in {tf.relative_to(TERRAFORM)}: {m.group(0)}")


def test_data_is_encrypted_at_rest(hcl_modules):
    origin = hcl_modules["origin"]
    db = origin.resource("aws_db_instance")
    assert db["storage_encrypted"] is True and db["kms_key_id"] == "${module.service.kms_key_arn}"
    assert db["multi_az"] is True and db["deletion_protection"] == "${var.deletion_protection}"
    assert db["manage_master_user_password"] is True and "password" not in db
    # Model blobs live in PostgreSQL (EDGEREC_ORIGIN_DSN): no bucket that nothing would use.
    assert not origin.resources("aws_s3_bucket"), "the origin stores blobs in PostgreSQL; an S3 bucket would be unused"
    # Each module's customer managed key: its own (modules/kms_key), or its service's (modules/service).
    cmk = {"${aws_kms_key.this.arn}", "${module.kms_key.arn}", "${module.service.kms_key_arn}"}
    for name in MODULE_NAMES:
        for sname, secret in hcl_modules[name].resources("aws_secretsmanager_secret").items():
            assert secret["kms_key_id"] in cmk, f"{name}: secret {sname} not on the CMK"
        for lname, lg in hcl_modules[name].resources("aws_cloudwatch_log_group").items():
            assert lg.get("kms_key_id"), f"{name}: log group {lname} not encrypted"


def test_example_wires_origin_cdn_and_three_edge_regions(hcl_example):
    modules = {}
    for block in hcl_example.blocks("module"):
        modules.update(block)
    edges = {n: m for n, m in modules.items() if m["source"] == "../../modules/edge_region"}
    assert "origin" in modules and "cdn" in modules
    assert len(edges) >= 3
    providers = {m["providers"]["aws"] for m in edges.values()}
    assert len(providers) == len(edges), "each edge region needs its own provider alias"
    assert modules["cdn"]["providers"]["aws"] == "${aws.us_east_1}"
    for name, edge in edges.items():
        # Each region has its own sync-token secret (modules/edge_region); none gets the origin's.
        assert "sync_token_secret_arn" not in edge, f"{name} must not get the origin's all-regions token"
        assert edge["origin_public_keys"] == "${var.origin_public_keys}", name
