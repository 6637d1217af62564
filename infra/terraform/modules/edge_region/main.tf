data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}
data "aws_region" "current" {}

# CloudFront's origin-facing address ranges: the only sources the edge ALB admits.
data "aws_ec2_managed_prefix_list" "cloudfront" {
  name = "com.amazonaws.global.cloudfront.origin-facing"
}

locals {
  account_id = data.aws_caller_identity.current.account_id
  partition  = data.aws_partition.current.partition
  region     = data.aws_region.current.name
  prefix     = "${var.name}-edge-${local.region}"

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

  # The sync token of this region's edges; the origin's region-tokens secret lists it for each of var.markets.
  sync_token_secret_name = "${var.name}/sync-token-${local.region}"

  tags = merge(var.tags, {
    "edgerec:component" = "edge"
    "edgerec:region"    = local.region
  })
}

################################################################################
# KMS: container logs and the sync-token secret of this region
################################################################################

resource "aws_kms_key" "this" {
  description             = "${local.prefix}: logs, sync token"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  # A key policy's "Resource": "*" means this key only, so it is written inline
  # rather than as an aws_iam_policy_document, which IAM-policy scanners misread.
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        Sid       = "AccountAdministration"
        Effect    = "Allow"
        Principal = { AWS = "arn:${local.partition}:iam::${local.account_id}:root" }
        Action    = "kms:*"
        Resource  = "*"
      },
      {
        Sid       = "CloudWatchLogs"
        Effect    = "Allow"
        Principal = { Service = "logs.${local.region}.amazonaws.com" }
        Action    = ["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"]
        Resource  = "*"
        Condition = {
          ArnLike = { "kms:EncryptionContext:aws:logs:arn" = "arn:${local.partition}:logs:${local.region}:${local.account_id}:log-group:/edgerec/${var.name}/*" }
        }
      },
    ]
  })

  tags = local.tags
}

resource "aws_kms_alias" "this" {
  name          = "alias/${local.prefix}"
  target_key_id = aws_kms_key.this.key_id
}

################################################################################
# This region's sync token (EDGEREC_SYNC_TOKEN). Created here, in the edge's own
# region, so edges start without a cross-region call and hold no other
# region's token. Terraform creates the container only; the value is put out of
# band (infra/terraform/README.md) and never appears in code, plans or state.
################################################################################

resource "aws_secretsmanager_secret" "sync_token" {
  #checkov:skip=CKV2_AWS_57:Rotation is the new|old overlap procedure in infra/terraform/README.md: the origin must accept the new token before this region's edges send it, which a rotation Lambda cannot order.
  name                    = local.sync_token_secret_name
  description             = "edgerec sync token of the ${local.region} edges (EDGEREC_SYNC_TOKEN), valid at the origin for markets ${join(",", var.markets)} only."
  kms_key_id              = aws_kms_key.this.arn
  recovery_window_in_days = var.secret_recovery_window_days

  tags = local.tags
}

resource "aws_cloudwatch_log_group" "this" {
  name              = "/edgerec/${var.name}/edge"
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.this.arn

  tags = local.tags
}

################################################################################
# Security groups
################################################################################

resource "aws_security_group" "alb" {
  name_prefix = "${local.prefix}-alb-"
  description = "edgerec edge ALB: HTTPS from CloudFront origin-facing ranges only"
  vpc_id      = var.vpc_id

  tags = local.tags

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_vpc_security_group_ingress_rule" "alb_https_from_cloudfront" {
  security_group_id = aws_security_group.alb.id
  description       = "HTTPS from CloudFront origin-facing servers"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  prefix_list_id    = data.aws_ec2_managed_prefix_list.cloudfront.id

  tags = local.tags
}

resource "aws_vpc_security_group_egress_rule" "alb_to_tasks" {
  security_group_id            = aws_security_group.alb.id
  description                  = "To edge tasks"
  ip_protocol                  = "tcp"
  from_port                    = local.container_port
  to_port                      = local.container_port
  referenced_security_group_id = aws_security_group.tasks.id

  tags = local.tags
}

resource "aws_security_group" "tasks" {
  name_prefix = "${local.prefix}-tasks-"
  description = "edgerec edge tasks"
  vpc_id      = var.vpc_id

  tags = local.tags

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_vpc_security_group_ingress_rule" "tasks_from_alb" {
  security_group_id            = aws_security_group.tasks.id
  description                  = "From the edge ALB"
  ip_protocol                  = "tcp"
  from_port                    = local.container_port
  to_port                      = local.container_port
  referenced_security_group_id = aws_security_group.alb.id

  tags = local.tags
}

resource "aws_vpc_security_group_egress_rule" "tasks_https" {
  security_group_id = aws_security_group.tasks.id
  description       = "HTTPS to the origin sync API and AWS APIs (ECR, Secrets Manager, Logs)"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = "0.0.0.0/0"

  tags = local.tags
}

################################################################################
# Internet-facing ALB: TLS, and only requests carrying the CDN secret header
################################################################################

resource "aws_lb" "this" {
  #checkov:skip=CKV2_AWS_28:WAF runs on the CloudFront distribution in front of this ALB; the ALB admits only CloudFront's origin-facing prefix list and forwards only requests with the CDN secret header, so a regional WAF would re-inspect the same traffic.
  name_prefix                = "ee-"
  internal                   = false
  load_balancer_type         = "application"
  security_groups            = [aws_security_group.alb.id]
  subnets                    = var.public_subnet_ids
  drop_invalid_header_fields = true
  enable_deletion_protection = var.deletion_protection
  idle_timeout               = 60

  access_logs {
    bucket  = var.alb_access_logs_bucket
    prefix  = "alb/${local.prefix}"
    enabled = true
  }

  tags = local.tags
}

resource "aws_lb_target_group" "this" {
  #checkov:skip=CKV_AWS_378:TLS terminates at the ALB; the ALB-to-task hop stays inside private subnets, limited by security groups to the ALB. The edge speaks plain HTTP (uvicorn) by design, keeping TLS off the latency-critical worker.
  name_prefix          = "ee-"
  port                 = local.container_port
  protocol             = "HTTP"
  target_type          = "ip"
  vpc_id               = var.vpc_id
  deregistration_delay = 30

  # Readiness: a task gets traffic only once it has state and a model.
  health_check {
    enabled             = true
    path                = local.readiness_path
    matcher             = "200"
    interval            = 10
    timeout             = 5
    healthy_threshold   = 2
    unhealthy_threshold = 3
  }

  tags = local.tags

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_lb_listener" "https" {
  load_balancer_arn = aws_lb.this.arn
  port              = 443
  protocol          = "HTTPS"
  ssl_policy        = "ELBSecurityPolicy-TLS13-1-2-2021-06"
  certificate_arn   = var.certificate_arn

  # Anything that did not come through the CDN is refused.
  default_action {
    type = "fixed-response"

    fixed_response {
      content_type = "text/plain"
      message_body = "Forbidden"
      status_code  = "403"
    }
  }

  tags = local.tags
}

resource "aws_lb_listener_rule" "from_cdn" {
  listener_arn = aws_lb_listener.https.arn
  priority     = 10

  condition {
    http_header {
      http_header_name = local.cdn_secret_header
      values           = var.cdn_secret_header_values
    }
  }

  action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.this.arn
  }

  tags = local.tags
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
    name                   = aws_lb.this.dns_name
    zone_id                = aws_lb.this.zone_id
    evaluate_target_health = true
  }
}

################################################################################
# ECS Fargate service
################################################################################

resource "aws_ecs_cluster" "this" {
  name = local.prefix

  setting {
    name  = "containerInsights"
    value = "enabled"
  }

  tags = local.tags
}

data "aws_iam_policy_document" "ecs_tasks_assume" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["ecs-tasks.amazonaws.com"]
    }

    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }
}

resource "aws_iam_role" "execution" {
  name_prefix        = "${var.name}-edge-exec-"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json

  tags = local.tags
}

resource "aws_iam_role_policy_attachment" "execution" {
  role       = aws_iam_role.execution.name
  policy_arn = "arn:${local.partition}:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy"
}

data "aws_iam_policy_document" "execution_secrets" {
  statement {
    sid     = "ReadInjectedSecrets"
    actions = ["secretsmanager:GetSecretValue"]
    resources = concat([aws_secretsmanager_secret.sync_token.arn, var.cdn_secret_arn, var.pseudonym_key_secret_arn],
    local.client_certificate ? [var.client_certificate_secret_arn] : [])
  }

  statement {
    sid       = "DecryptInjectedSecrets"
    actions   = ["kms:Decrypt"]
    resources = distinct(concat([aws_kms_key.this.arn], var.secrets_kms_key_arns))
  }
}

resource "aws_iam_role_policy" "execution_secrets" {
  name_prefix = "secrets-"
  role        = aws_iam_role.execution.id
  policy      = data.aws_iam_policy_document.execution_secrets.json
}

# The edge process needs no AWS API: an empty task role keeps it that way.
resource "aws_iam_role" "task" {
  name_prefix        = "${var.name}-edge-task-"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json

  tags = local.tags
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
    name                   = "tls-init"
    image                  = var.image
    essential              = false
    user                   = "10001:10001"
    readonlyRootFilesystem = true
    command                = ["python", "-c", local.tls_init_script]
    environment            = concat([{ name = "TLS_DIR", value = local.tls_dir }], var.origin_ca_bundle == null ? [] : local.tls_init_origin_ca_environment)
    secrets                = local.client_certificate ? local.tls_init_client_certificate_secrets : []

    mountPoints = [
      { sourceVolume = "data", containerPath = local.data_dir, readOnly = false },
    ]

    logConfiguration = {
      logDriver = "awslogs"
      options = {
        awslogs-group         = aws_cloudwatch_log_group.this.name
        awslogs-region        = local.region
        awslogs-stream-prefix = "edge-tls-init"
      }
    }
  }

  container_definition = {
    name                   = local.container_name
    image                  = var.image
    essential              = true
    user                   = "10001:10001"
    readonlyRootFilesystem = true
    stopTimeout            = 30
    dependsOn              = local.tls_init_enabled ? [{ containerName = local.tls_init_container.name, condition = "SUCCESS" }] : []

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
      { name = "EDGEREC_SYNC_TOKEN", valueFrom = aws_secretsmanager_secret.sync_token.arn },
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

    mountPoints = [
      { sourceVolume = "data", containerPath = local.data_dir, readOnly = false },
      { sourceVolume = "tmp", containerPath = "/tmp", readOnly = false },
    ]

    linuxParameters = {
      initProcessEnabled = true
    }

    logConfiguration = {
      logDriver = "awslogs"
      options = {
        awslogs-group         = aws_cloudwatch_log_group.this.name
        awslogs-region        = local.region
        awslogs-stream-prefix = "edge"
      }
    }
  }
}

resource "aws_ecs_task_definition" "this" {
  family                   = local.prefix
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = var.cpu
  memory                   = var.memory
  execution_role_arn       = aws_iam_role.execution.arn
  task_role_arn            = aws_iam_role.task.arn

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = var.cpu_architecture
  }

  # Fargate ephemeral storage is encrypted at rest (AES-256, Fargate-managed key).
  ephemeral_storage {
    size_in_gib = var.ephemeral_storage_gib
  }

  volume {
    name = "data"
  }

  volume {
    name = "tmp"
  }

  container_definitions = jsonencode(concat(local.tls_init_enabled ? [local.tls_init_container] : [], [local.container_definition]))

  tags = local.tags
}

resource "aws_ecs_service" "this" {
  name                              = local.prefix
  cluster                           = aws_ecs_cluster.this.id
  task_definition                   = aws_ecs_task_definition.this.arn
  desired_count                     = var.min_capacity
  launch_type                       = "FARGATE"
  platform_version                  = "LATEST"
  health_check_grace_period_seconds = 60
  propagate_tags                    = "SERVICE"
  enable_ecs_managed_tags           = true
  enable_execute_command            = false

  # Rolling deploy: new tasks must pass /readyz before old ones drain; a failing deploy rolls back.
  deployment_minimum_healthy_percent = 100
  deployment_maximum_percent         = 200

  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }

  network_configuration {
    subnets          = var.private_subnet_ids
    security_groups  = [aws_security_group.tasks.id]
    assign_public_ip = false
  }

  load_balancer {
    target_group_arn = aws_lb_target_group.this.arn
    container_name   = local.container_name
    container_port   = local.container_port
  }

  depends_on = [aws_lb_listener_rule.from_cdn]

  lifecycle {
    # Autoscaling owns the task count.
    ignore_changes = [desired_count]
  }

  tags = local.tags
}

################################################################################
# Autoscaling on CPU and on requests per task
################################################################################

resource "aws_appautoscaling_target" "this" {
  service_namespace  = "ecs"
  scalable_dimension = "ecs:service:DesiredCount"
  resource_id        = "service/${aws_ecs_cluster.this.name}/${aws_ecs_service.this.name}"
  min_capacity       = var.min_capacity
  max_capacity       = var.max_capacity

  tags = local.tags
}

resource "aws_appautoscaling_policy" "cpu" {
  name               = "${local.prefix}-cpu"
  policy_type        = "TargetTrackingScaling"
  service_namespace  = aws_appautoscaling_target.this.service_namespace
  scalable_dimension = aws_appautoscaling_target.this.scalable_dimension
  resource_id        = aws_appautoscaling_target.this.resource_id

  target_tracking_scaling_policy_configuration {
    target_value       = var.cpu_target_percent
    scale_in_cooldown  = 300
    scale_out_cooldown = 60

    predefined_metric_specification {
      predefined_metric_type = "ECSServiceAverageCPUUtilization"
    }
  }
}

resource "aws_appautoscaling_policy" "requests" {
  name               = "${local.prefix}-requests"
  policy_type        = "TargetTrackingScaling"
  service_namespace  = aws_appautoscaling_target.this.service_namespace
  scalable_dimension = aws_appautoscaling_target.this.scalable_dimension
  resource_id        = aws_appautoscaling_target.this.resource_id

  target_tracking_scaling_policy_configuration {
    target_value       = var.requests_per_target
    scale_in_cooldown  = 300
    scale_out_cooldown = 60

    predefined_metric_specification {
      predefined_metric_type = "ALBRequestCountPerTarget"
      resource_label         = "${aws_lb.this.arn_suffix}/${aws_lb_target_group.this.arn_suffix}"
    }
  }
}
