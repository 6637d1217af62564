data "aws_region" "current" {}

# CloudFront's origin-facing address ranges: the only sources the edge ALB admits.
data "aws_ec2_managed_prefix_list" "cloudfront" {
  name = "com.amazonaws.global.cloudfront.origin-facing"
}

locals {
  region = data.aws_region.current.name
  prefix = "${var.name}-edge-${local.region}"

  # Names shared with the application: keep in step with infra/app_contract.json (tests/infra checks it).
  container_name    = "edge"
  container_port    = 8000
  liveness_path     = "/healthz"
  readiness_path    = "/readyz"
  cdn_secret_header = "X-Edgerec-CDN-Secret"
  data_dir          = "/var/lib/edgerec"

  # Files of the edge -> origin TLS settings, written at task start by the "tls-init" container (below) on
  # the data volume: the origin's private CA bundle (origin_ca_bundle) and the mutual-TLS client certificate
  # (client_certificate_secret_arn). Neither option set: no tls-init, the system trust store verifies the origin.
  tls_dir            = "${local.data_dir}/tls"
  origin_ca_file     = "${local.tls_dir}/origin_ca.pem"
  client_cert_file   = "${local.tls_dir}/client_cert.pem"
  client_key_file    = "${local.tls_dir}/client_key.pem"
  client_certificate = var.client_certificate_secret_arn != null
  tls_init_enabled   = var.origin_ca_bundle != null || local.client_certificate

  # This region's sync token (EDGEREC_SYNC_TOKEN), created in the edge's own region (by modules/service), so edges
  # start without a cross-region call and hold no other region's token; the origin's region-tokens secret lists it
  # for each of var.markets.
  secrets = {
    sync_token = {
      name        = "sync-token-${local.region}"
      description = "edgerec sync token of the ${local.region} edges (EDGEREC_SYNC_TOKEN), valid at the origin for markets ${join(",", var.markets)} only."
    }
  }
  sync_token_secret_name = "${var.name}/${local.secrets.sync_token.name}"

  tags = merge(var.tags, {
    "edgerec:component" = "edge"
    "edgerec:region"    = local.region
  })
}

################################################################################
# The service: internet-facing ALB (TLS; 403 unless the CDN secret header), ECS
# Fargate, autoscaling on CPU and requests per task, on modules/service
################################################################################

module "service" {
  source = "../service"

  name      = var.name
  component = "edge"
  prefix    = local.prefix
  # IAM names are global and short (38 characters): the random suffix keeps the regions' roles apart.
  iam_name_prefix = "${var.name}-edge"
  tags            = local.tags

  kms_key_description = "${local.prefix}: logs, sync token"
  log_retention_days  = var.log_retention_days

  network = {
    vpc_id          = var.network.vpc_id
    alb_subnet_ids  = var.network.public_subnet_ids
    task_subnet_ids = var.network.private_subnet_ids
  }
  internal        = false
  alb_name_prefix = "ee-"
  alb_description = "edgerec edge ALB: HTTPS from CloudFront origin-facing ranges only"
  alb_ingress = {
    cloudfront = { description = "HTTPS from CloudFront origin-facing servers", prefix_list_id = data.aws_ec2_managed_prefix_list.cloudfront.id }
  }
  alb_access_logs_bucket = var.alb_access_logs_bucket
  deletion_protection    = var.deletion_protection
  certificate_arn        = var.certificate_arn
  # Anything that did not come through the CDN is refused.
  required_header_name   = local.cdn_secret_header
  required_header_values = var.cdn_secret_header_values

  # Readiness: a task gets traffic only once it has state and a model. TLS ends at the ALB (see modules/service).
  target_protocol         = "HTTP"
  health_check_path       = local.readiness_path
  health_check_interval   = 10
  tasks_https_description = "HTTPS to the origin sync API and AWS APIs (ECR, Secrets Manager, Logs)"

  image          = var.image
  containers     = concat(local.tls_init_enabled ? [local.tls_init_container] : [], [local.container_definition])
  container_name = local.container_name
  container_port = local.container_port
  data_dir       = local.data_dir
  task           = var.task

  # The sync token is this module's; the CDN secret and pseudonym key replicas and the client certificate are given.
  secrets                     = local.secrets
  secret_recovery_window_days = var.secret_recovery_window_days
  secret_arns                 = concat([var.cdn_secret_arn, var.pseudonym_key_secret_arn], local.client_certificate ? [var.client_certificate_secret_arn] : [])
  secrets_kms_key_arns        = var.secrets_kms_key_arns

  min_capacity        = var.min_capacity
  max_capacity        = var.max_capacity
  cpu_target_percent  = var.cpu_target_percent
  requests_per_target = var.requests_per_target
}

# This region's answer for the latency-routed edge domain; Route 53 drops it when the ALB has no healthy target.
resource "aws_route53_record" "latency" {
  zone_id        = var.route53_zone_id
  name           = var.edge_domain_name
  type           = "A"
  set_identifier = local.region

  latency_routing_policy {
    region = local.region
  }

  alias {
    name                   = module.service.alb_dns_name
    zone_id                = module.service.alb_zone_id
    evaluate_target_health = true
  }
}

locals {
  # Non-secret configuration only; secrets go through "secrets". The file settings are set only with their option.
  container_environment = [
    # Production mode: the edge refuses weak or missing secrets and an http:// origin.
    { name = "EDGEREC_ENV", value = "production" },
    # awsvpc: the task's own ENI; the security group admits only the ALB.
    { name = "EDGEREC_EDGE_HOST", value = "0.0.0.0" },
    { name = "EDGEREC_EDGE_PORT", value = tostring(local.container_port) },
    { name = "EDGEREC_ORIGIN_URL", value = var.origin_url },
    { name = "EDGEREC_REGIONS", value = join(",", var.markets) },
    { name = "EDGEREC_EDGE_DATA_DIR", value = local.data_dir },
    # Not secret: the origin's Ed25519 public key(s), base64, comma-separated during a key rotation.
    { name = "EDGEREC_ORIGIN_PUBLIC_KEY", value = join(",", var.origin_public_keys) },
    { name = "EDGEREC_MAX_STALENESS_S", value = tostring(var.max_staleness_s) },
    { name = "EDGEREC_UNTRUSTED_CDN_HEADERS", value = var.untrusted_cdn_headers },
  ]
  origin_ca_environment = [
    { name = "EDGEREC_ORIGIN_CA_FILE", value = local.origin_ca_file },
  ]
  client_certificate_environment = [
    { name = "EDGEREC_CLIENT_CERT_FILE", value = local.client_cert_file },
    { name = "EDGEREC_CLIENT_KEY_FILE", value = local.client_key_file },
  ]

  # tls-init writes every PEM_<NAME> variable to <tls_dir>/<name>.pem (mode 0600) and exits.
  tls_init_script = <<-EOT
    import os, pathlib
    d = pathlib.Path(os.environ["TLS_DIR"])
    d.mkdir(mode=0o700, exist_ok=True)
    for var, text in os.environ.items():
        if var.startswith("PEM_"):
            fd = os.open(d / (var[4:].lower() + ".pem"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.write(fd, text.strip().encode() + b"\n")
            os.close(fd)
  EOT
  # Not secret: a CA bundle is public.
  tls_init_origin_ca_environment = [
    { name = "PEM_ORIGIN_CA", value = coalesce(var.origin_ca_bundle, "-") },
  ]
  # The client certificate and its key: a Secrets Manager JSON secret {"certificate": PEM, "private_key": PEM}.
  tls_init_client_certificate_secrets = [
    { name = "PEM_CLIENT_CERT", valueFrom = "${coalesce(var.client_certificate_secret_arn, "-")}:certificate::" },
    { name = "PEM_CLIENT_KEY", valueFrom = "${coalesce(var.client_certificate_secret_arn, "-")}:private_key::" },
  ]

  tls_init_container = {
    name        = "tls-init"
    essential   = false
    command     = ["python", "-c", local.tls_init_script]
    environment = concat([{ name = "TLS_DIR", value = local.tls_dir }], var.origin_ca_bundle == null ? [] : local.tls_init_origin_ca_environment)
    secrets     = local.client_certificate ? local.tls_init_client_certificate_secrets : []
  }

  container_definition = {
    name        = local.container_name
    essential   = true
    stopTimeout = 30
    dependsOn   = local.tls_init_enabled ? [{ containerName = local.tls_init_container.name, condition = "SUCCESS" }] : []

    portMappings = [
      {
        name          = "http"
        containerPort = local.container_port
        protocol      = "tcp"
      }
    ]

    environment = concat(local.container_environment,
      var.origin_ca_bundle == null ? [] : local.origin_ca_environment,
    local.client_certificate ? local.client_certificate_environment : [])

    secrets = [
      { name = "EDGEREC_SYNC_TOKEN", valueFrom = module.service.secret_arns["sync_token"] },
      { name = "EDGEREC_CDN_SECRET", valueFrom = var.cdn_secret_arn },
      { name = "EDGEREC_PSEUDONYM_KEY", valueFrom = var.pseudonym_key_secret_arn },
    ]

    # Liveness only (the process answers); readiness is the ALB's /readyz check.
    healthCheck = {
      command     = ["CMD", "python", "-c", "import sys,urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=3).status == 200 else 1)"]
      interval    = 10
      timeout     = 5
      retries     = 3
      startPeriod = 30
    }
  }
}
