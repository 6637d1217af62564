# One load-balanced, hardened ECS Fargate service: what the origin and every edge region share. The caller gives
# the containers' own settings (ports, environment, secrets, health check) and the front door's policy (who may
# reach the ALB, an optional required header, optional mutual TLS); this module adds the rest the same way for both.

data "aws_region" "current" {}

locals {
  region = data.aws_region.current.name
  tags   = var.tags

  # Every container runs as the image's non-root user on a read-only root file system, with the task's data
  # volume and a scratch /tmp as its only writable places, and logs to the service's log group.
  container_defaults = {
    image                  = var.image
    user                   = "10001:10001"
    readonlyRootFilesystem = true
    mountPoints = [
      { sourceVolume = "data", containerPath = var.data_dir, readOnly = false },
      { sourceVolume = "tmp", containerPath = "/tmp", readOnly = false },
    ]
    linuxParameters = { initProcessEnabled = true }
  }
  containers = [
    for c in var.containers : merge(local.container_defaults, {
      logConfiguration = {
        logDriver = "awslogs"
        options = {
          awslogs-group         = aws_cloudwatch_log_group.this.name
          awslogs-region        = local.region
          awslogs-stream-prefix = c.name == var.container_name ? var.component : "${var.component}-${c.name}"
        }
      }
    }, c)
  ]

  # What the execution role may read: this module's secrets and the caller's others.
  secret_arns = concat([for s in aws_secretsmanager_secret.this : s.arn], var.secret_arns)

  required_header = var.required_header_name != null
  autoscaling_policies = {
    for k, p in {
      cpu      = { target = var.cpu_target_percent, metric = "ECSServiceAverageCPUUtilization", label = null }
      requests = { target = var.requests_per_target, metric = "ALBRequestCountPerTarget", label = "${aws_lb.this.arn_suffix}/${aws_lb_target_group.this.arn_suffix}" }
    } : k => p if p.target != null
  }
}

# Container logs, the injected secrets of the caller and whatever else it stores at rest (the origin's database).
module "kms_key" {
  source = "../kms_key"

  alias             = var.prefix
  description       = var.kms_key_description
  log_group_pattern = "/edgerec/${var.name}/*"
  tags              = local.tags
}

# The caller's secrets: containers only. Each value is put out of band (infra/terraform/README.md), so that it never
# appears in code, plans, state or outputs.
resource "aws_secretsmanager_secret" "this" {
  #checkov:skip=CKV2_AWS_57:Every origin and edge-region secret rotates by an operator-driven overlap procedure in infra/terraform/README.md (two admin or sync tokens valid during the switch, region tokens new|old with the origin first and then that region's edges, a signing key trusted by the edges through origin_public_keys before the origin signs with it); a rotation Lambda cannot order those redeploys.
  for_each = var.secrets

  name                    = "${var.name}/${each.value.name}"
  description             = each.value.description
  kms_key_id              = module.kms_key.arn
  recovery_window_in_days = var.secret_recovery_window_days

  tags = local.tags
}

resource "aws_cloudwatch_log_group" "this" {
  name              = "/edgerec/${var.name}/${var.component}"
  retention_in_days = var.log_retention_days
  kms_key_id        = module.kms_key.arn

  tags = local.tags
}

################################################################################
# Security groups: the ALB admits var.alb_ingress, the tasks admit only the ALB
################################################################################

resource "aws_security_group" "alb" {
  name_prefix = "${var.prefix}-alb-"
  description = var.alb_description
  vpc_id      = var.network.vpc_id

  tags = local.tags

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_vpc_security_group_ingress_rule" "alb_https" {
  for_each = var.alb_ingress

  security_group_id = aws_security_group.alb.id
  description       = each.value.description
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = each.value.cidr_ipv4
  prefix_list_id    = each.value.prefix_list_id

  tags = local.tags
}

resource "aws_vpc_security_group_egress_rule" "alb_to_tasks" {
  security_group_id            = aws_security_group.alb.id
  description                  = "To ${var.component} tasks"
  ip_protocol                  = "tcp"
  from_port                    = var.container_port
  to_port                      = var.container_port
  referenced_security_group_id = aws_security_group.tasks.id

  tags = local.tags
}

resource "aws_security_group" "tasks" {
  name_prefix = "${var.prefix}-tasks-"
  description = "edgerec ${var.component} tasks"
  vpc_id      = var.network.vpc_id

  tags = local.tags

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_vpc_security_group_ingress_rule" "tasks_from_alb" {
  security_group_id            = aws_security_group.tasks.id
  description                  = "From the ${var.component} ALB"
  ip_protocol                  = "tcp"
  from_port                    = var.container_port
  to_port                      = var.container_port
  referenced_security_group_id = aws_security_group.alb.id

  tags = local.tags
}

resource "aws_vpc_security_group_egress_rule" "tasks_https" {
  security_group_id = aws_security_group.tasks.id
  description       = var.tasks_https_description
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = "0.0.0.0/0"

  tags = local.tags
}

################################################################################
# ALB: HTTPS only (TLS 1.2/1.3), access logs, invalid headers dropped
################################################################################

resource "aws_lb" "this" {
  #checkov:skip=CKV2_AWS_28:Only the edge's ALB is internet-facing, and WAF runs on the CloudFront distribution in front of it: the ALB admits only CloudFront's origin-facing prefix list and forwards only requests with the CDN secret header (required_header_name), so a regional WAF would re-inspect the same traffic. The origin's ALB is internal.
  name_prefix                = var.alb_name_prefix
  internal                   = var.internal
  load_balancer_type         = "application"
  security_groups            = [aws_security_group.alb.id]
  subnets                    = var.network.alb_subnet_ids
  drop_invalid_header_fields = true
  enable_deletion_protection = var.deletion_protection
  idle_timeout               = var.idle_timeout

  access_logs {
    bucket  = var.alb_access_logs_bucket
    prefix  = "alb/${var.prefix}"
    enabled = true
  }

  tags = local.tags
}

resource "aws_lb_target_group" "this" {
  #checkov:skip=CKV_AWS_378:The target protocol is the caller's: HTTPS for the origin; HTTP for the edge, whose ALB-to-task hop stays inside private subnets, limited by security groups to the ALB, keeping TLS off the latency-critical worker.
  name_prefix          = var.alb_name_prefix
  port                 = var.container_port
  protocol             = var.target_protocol
  target_type          = "ip"
  vpc_id               = var.network.vpc_id
  deregistration_delay = 30

  # A task gets traffic only while this answers 200 (the edge's /readyz: it has state and a model).
  health_check {
    enabled             = true
    protocol            = var.target_protocol
    path                = var.health_check_path
    matcher             = "200"
    interval            = var.health_check_interval
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

  # Optional mutual TLS at the ALB (default off): callers must present a certificate that chains to the CA
  # bundle in S3. The ALB ends TLS, so the origin's own per-region certificate check (--client-ca) cannot run
  # behind it: see infra/terraform/README.md (TLS).
  dynamic "mutual_authentication" {
    for_each = var.client_ca_bundle_s3 == null ? [] : [var.client_ca_bundle_s3]

    content {
      mode            = "verify"
      trust_store_arn = aws_lb_trust_store.clients[0].arn
    }
  }

  # With a required header, anything that does not carry it is refused (403); the rule below forwards the rest.
  default_action {
    type             = local.required_header ? "fixed-response" : "forward"
    target_group_arn = local.required_header ? null : aws_lb_target_group.this.arn

    dynamic "fixed_response" {
      for_each = local.required_header ? ["forbidden"] : []

      content {
        content_type = "text/plain"
        message_body = "Forbidden"
        status_code  = "403"
      }
    }
  }

  tags = local.tags
}

resource "aws_lb_listener_rule" "required_header" {
  count = local.required_header ? 1 : 0

  listener_arn = aws_lb_listener.https.arn
  priority     = 10

  condition {
    http_header {
      http_header_name = var.required_header_name
      values           = var.required_header_values
    }
  }

  action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.this.arn
  }

  tags = local.tags
}

resource "aws_lb_trust_store" "clients" {
  count = var.client_ca_bundle_s3 == null ? 0 : 1

  name_prefix                      = var.alb_name_prefix
  ca_certificates_bundle_s3_bucket = var.client_ca_bundle_s3.bucket
  ca_certificates_bundle_s3_key    = var.client_ca_bundle_s3.key

  tags = local.tags
}

################################################################################
# ECS Fargate: cluster, roles, task definition, service
################################################################################

resource "aws_ecs_cluster" "this" {
  name = var.prefix

  setting {
    name  = "containerInsights"
    value = "enabled"
  }

  tags = local.tags
}

data "aws_caller_identity" "current" {}

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
      values   = [data.aws_caller_identity.current.account_id]
    }
  }
}

# Execution role: pulls the image, writes logs, reads the secrets it injects (and nothing else).
resource "aws_iam_role" "execution" {
  name_prefix        = "${var.iam_name_prefix}-exec-"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json

  tags = local.tags
}

data "aws_partition" "current" {}

resource "aws_iam_role_policy_attachment" "execution" {
  role       = aws_iam_role.execution.name
  policy_arn = "arn:${data.aws_partition.current.partition}:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy"
}

data "aws_iam_policy_document" "execution_secrets" {
  statement {
    sid       = "ReadInjectedSecrets"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = local.secret_arns
  }

  statement {
    sid       = "DecryptInjectedSecrets"
    actions   = ["kms:Decrypt"]
    resources = distinct(concat([module.kms_key.arn], var.secrets_kms_key_arns))
  }
}

resource "aws_iam_role_policy" "execution_secrets" {
  name_prefix = "secrets-"
  role        = aws_iam_role.execution.id
  policy      = data.aws_iam_policy_document.execution_secrets.json
}

# Task role: neither service calls an AWS API; an empty role keeps it that way.
resource "aws_iam_role" "task" {
  name_prefix        = "${var.iam_name_prefix}-task-"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json

  tags = local.tags
}

resource "aws_ecs_task_definition" "this" {
  family                   = var.prefix
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = var.task.cpu
  memory                   = var.task.memory
  execution_role_arn       = aws_iam_role.execution.arn
  task_role_arn            = aws_iam_role.task.arn

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = var.task.cpu_architecture
  }

  # Fargate ephemeral storage (encrypted at rest, AES-256, Fargate-managed key) backs the data volume.
  ephemeral_storage {
    size_in_gib = var.task.ephemeral_storage_gib
  }

  volume {
    name = "data"
  }

  volume {
    name = "tmp"
  }

  container_definitions = jsonencode(local.containers)

  tags = local.tags
}

resource "aws_ecs_service" "this" {
  name                              = var.prefix
  cluster                           = aws_ecs_cluster.this.id
  task_definition                   = aws_ecs_task_definition.this.arn
  desired_count                     = var.min_capacity
  launch_type                       = "FARGATE"
  platform_version                  = "LATEST"
  health_check_grace_period_seconds = 60
  propagate_tags                    = "SERVICE"
  enable_ecs_managed_tags           = true
  enable_execute_command            = false

  # Rolling deploy: new tasks must pass the target group's check before old ones drain; a failing deploy rolls back.
  deployment_minimum_healthy_percent = 100
  deployment_maximum_percent         = 200

  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }

  network_configuration {
    subnets          = var.network.task_subnet_ids
    security_groups  = [aws_security_group.tasks.id]
    assign_public_ip = false
  }

  load_balancer {
    target_group_arn = aws_lb_target_group.this.arn
    container_name   = var.container_name
    container_port   = var.container_port
  }

  depends_on = [aws_lb_listener.https, aws_lb_listener_rule.required_header]

  lifecycle {
    # Application Auto Scaling owns the task count (between min_capacity and max_capacity).
    ignore_changes = [desired_count]
  }

  tags = local.tags
}

################################################################################
# Autoscaling: the count stays within [min_capacity, max_capacity] (min = max
# pins it), with target tracking on CPU and on requests per task when given
################################################################################

resource "aws_appautoscaling_target" "this" {
  service_namespace  = "ecs"
  scalable_dimension = "ecs:service:DesiredCount"
  resource_id        = "service/${aws_ecs_cluster.this.name}/${aws_ecs_service.this.name}"
  min_capacity       = var.min_capacity
  max_capacity       = var.max_capacity

  tags = local.tags
}

resource "aws_appautoscaling_policy" "this" {
  for_each = local.autoscaling_policies

  name               = "${var.prefix}-${each.key}"
  policy_type        = "TargetTrackingScaling"
  service_namespace  = aws_appautoscaling_target.this.service_namespace
  scalable_dimension = aws_appautoscaling_target.this.scalable_dimension
  resource_id        = aws_appautoscaling_target.this.resource_id

  target_tracking_scaling_policy_configuration {
    target_value       = each.value.target
    scale_in_cooldown  = 300
    scale_out_cooldown = 60

    predefined_metric_specification {
      predefined_metric_type = each.value.metric
      resource_label         = each.value.label
    }
  }
}
