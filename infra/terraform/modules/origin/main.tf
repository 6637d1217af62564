data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}
data "aws_region" "current" {}

locals {
  account_id = data.aws_caller_identity.current.account_id
  partition  = data.aws_partition.current.partition
  region     = data.aws_region.current.name

  # Names shared with the application: keep in step with infra/app_contract.json (tests/infra checks it).
  container_name = "origin"
  container_port = 8080
  health_path    = "/healthz"

  # With EDGEREC_ORIGIN_DSN the model blobs live in PostgreSQL; EDGEREC_BLOB_DIR is each task's local
  # read-through cache of them, on the task's ephemeral storage (the image creates and owns data_dir).
  data_dir = "/var/lib/edgerec"
  blob_dir = "${local.data_dir}/blobs"

  # TLS on the ALB -> task hop. The ALB does not verify a target's certificate, so each task makes its own
  # self-signed key pair at start (the "tls-init" container, below): encryption in transit inside the VPC
  # with a private key that never leaves the task, is in no secret and needs no rotation.
  tls_dir       = "${local.data_dir}/tls"
  tls_cert_file = "${local.tls_dir}/cert.pem"
  tls_key_file  = "${local.tls_dir}/key.pem"

  tags = merge(var.tags, {
    "edgerec:component" = "origin"
  })
}

################################################################################
# KMS: one customer managed key for the origin's data at rest
################################################################################

resource "aws_kms_key" "this" {
  description             = "${var.name} origin: database (incl. model blobs), secrets, logs"
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
  name          = "alias/${var.name}-origin"
  target_key_id = aws_kms_key.this.key_id
}

################################################################################
# Secrets. Terraform creates the containers only; the values are put out of
# band (see infra/terraform/README.md) so that they never appear in code, plans,
# state or outputs.
#   admin-token    EDGEREC_ADMIN_TOKEN    comma-separated accepted tokens, first is current
#   sync-token     EDGEREC_SYNC_TOKEN     all-regions sync token(s): transitional / break-glass
#   region-tokens  EDGEREC_REGION_TOKENS  per-market edge tokens, "GB=new|old,IE=new|old,DE=..."
#   signing-key    EDGEREC_SIGNING_KEY    the origin's Ed25519 private key (PEM)
# The edges' own tokens live in one secret per edge region (modules/edge_region),
# so no edge holds a token that syncs another region's data.
################################################################################

resource "aws_secretsmanager_secret" "admin_token" {
  #checkov:skip=CKV2_AWS_57:Rotation is the operator-driven two-token procedure in infra/terraform/README.md (both tokens valid during the switch); a rotation Lambda cannot coordinate the origin and edge redeploys.
  name                    = "${var.name}/admin-token"
  description             = "edgerec origin admin API token (EDGEREC_ADMIN_TOKEN)."
  kms_key_id              = aws_kms_key.this.arn
  recovery_window_in_days = var.secret_recovery_window_days

  tags = local.tags
}

# Not replicated: edges present their region's token, never this one.
resource "aws_secretsmanager_secret" "sync_token" {
  #checkov:skip=CKV2_AWS_57:Rotation is the operator-driven two-token procedure in infra/terraform/README.md (origin accepts old and new while clients switch); a rotation Lambda cannot coordinate it.
  name                    = "${var.name}/sync-token"
  description             = "edgerec all-regions sync token(s) accepted by the origin (EDGEREC_SYNC_TOKEN); transitional/break-glass, no edge holds it."
  kms_key_id              = aws_kms_key.this.arn
  recovery_window_in_days = var.secret_recovery_window_days

  tags = local.tags
}

resource "aws_secretsmanager_secret" "region_tokens" {
  #checkov:skip=CKV2_AWS_57:Per-region tokens rotate with the new|old overlap procedure in infra/terraform/README.md (origin first, then that region's edges); a rotation Lambda cannot order the redeploys.
  name                    = "${var.name}/region-tokens"
  description             = "edgerec per-region edge sync tokens accepted by the origin (EDGEREC_REGION_TOKENS: GB=new|old,DE=...)."
  kms_key_id              = aws_kms_key.this.arn
  recovery_window_in_days = var.secret_recovery_window_days

  tags = local.tags
}

resource "aws_secretsmanager_secret" "signing_key" {
  #checkov:skip=CKV2_AWS_57:An Ed25519 key rotation needs the edges to trust the new public key first (origin_public_keys, an apply) before the origin signs with it; the procedure in infra/terraform/README.md orders that, a rotation Lambda cannot.
  name                    = "${var.name}/signing-key"
  description             = "edgerec origin Ed25519 signing key, PEM (EDGEREC_SIGNING_KEY); made by `edgerec origin keygen`."
  kms_key_id              = aws_kms_key.this.arn
  recovery_window_in_days = var.secret_recovery_window_days

  tags = local.tags
}

################################################################################
# Security groups
################################################################################

resource "aws_security_group" "alb" {
  name_prefix = "${var.name}-origin-alb-"
  description = "edgerec origin ALB: HTTPS from the edge VPCs and operators"
  vpc_id      = var.vpc_id

  tags = local.tags

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_vpc_security_group_ingress_rule" "alb_https" {
  for_each = toset(var.ingress_cidr_blocks)

  security_group_id = aws_security_group.alb.id
  description       = "HTTPS from ${each.value}"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = each.value

  tags = local.tags
}

resource "aws_vpc_security_group_egress_rule" "alb_to_tasks" {
  security_group_id            = aws_security_group.alb.id
  description                  = "To origin tasks"
  ip_protocol                  = "tcp"
  from_port                    = local.container_port
  to_port                      = local.container_port
  referenced_security_group_id = aws_security_group.tasks.id

  tags = local.tags
}

resource "aws_security_group" "tasks" {
  name_prefix = "${var.name}-origin-tasks-"
  description = "edgerec origin tasks"
  vpc_id      = var.vpc_id

  tags = local.tags

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_vpc_security_group_ingress_rule" "tasks_from_alb" {
  security_group_id            = aws_security_group.tasks.id
  description                  = "From the origin ALB"
  ip_protocol                  = "tcp"
  from_port                    = local.container_port
  to_port                      = local.container_port
  referenced_security_group_id = aws_security_group.alb.id

  tags = local.tags
}

resource "aws_vpc_security_group_egress_rule" "tasks_https" {
  security_group_id = aws_security_group.tasks.id
  description       = "HTTPS to AWS APIs (ECR, Secrets Manager, Logs) via VPC endpoints or NAT"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = "0.0.0.0/0"

  tags = local.tags
}

resource "aws_vpc_security_group_egress_rule" "tasks_to_db" {
  security_group_id            = aws_security_group.tasks.id
  description                  = "PostgreSQL"
  ip_protocol                  = "tcp"
  from_port                    = 5432
  to_port                      = 5432
  referenced_security_group_id = aws_security_group.db.id

  tags = local.tags
}

resource "aws_security_group" "db" {
  name_prefix = "${var.name}-origin-db-"
  description = "edgerec origin PostgreSQL: only from origin tasks"
  vpc_id      = var.vpc_id

  tags = local.tags

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_vpc_security_group_ingress_rule" "db_from_tasks" {
  security_group_id            = aws_security_group.db.id
  description                  = "PostgreSQL from origin tasks"
  ip_protocol                  = "tcp"
  from_port                    = 5432
  to_port                      = 5432
  referenced_security_group_id = aws_security_group.tasks.id

  tags = local.tags
}

################################################################################
# RDS PostgreSQL: Multi-AZ, encrypted, backed up, TLS enforced
################################################################################

resource "aws_db_subnet_group" "this" {
  name_prefix = "${var.name}-origin-"
  description = "edgerec origin database subnets"
  subnet_ids  = var.database_subnet_ids

  tags = local.tags
}

resource "aws_db_parameter_group" "this" {
  name_prefix = "${var.name}-origin-pg${split(".", var.db_engine_version)[0]}-"
  family      = "postgres${split(".", var.db_engine_version)[0]}"
  description = "edgerec origin: TLS only, statement logging"

  parameter {
    name  = "rds.force_ssl"
    value = "1"
  }

  parameter {
    name  = "log_min_duration_statement"
    value = "500"
  }

  parameter {
    name  = "log_connections"
    value = "1"
  }

  parameter {
    name  = "log_statement"
    value = "ddl"
  }

  tags = local.tags

  lifecycle {
    create_before_destroy = true
  }
}

data "aws_iam_policy_document" "rds_monitoring_assume" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["monitoring.rds.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "rds_monitoring" {
  name_prefix        = "${var.name}-rds-mon-"
  assume_role_policy = data.aws_iam_policy_document.rds_monitoring_assume.json

  tags = local.tags
}

resource "aws_iam_role_policy_attachment" "rds_monitoring" {
  role       = aws_iam_role.rds_monitoring.name
  policy_arn = "arn:${local.partition}:iam::aws:policy/service-role/AmazonRDSEnhancedMonitoringRole"
}

resource "aws_db_instance" "this" {
  identifier_prefix = "${var.name}-origin-"

  engine                     = "postgres"
  engine_version             = var.db_engine_version
  auto_minor_version_upgrade = true
  instance_class             = var.db_instance_class
  allocated_storage          = var.db_allocated_storage
  max_allocated_storage      = var.db_max_allocated_storage
  storage_type               = "gp3"
  storage_encrypted          = true
  kms_key_id                 = aws_kms_key.this.arn

  db_name                             = var.db_name
  username                            = var.db_username
  manage_master_user_password         = true
  master_user_secret_kms_key_id       = aws_kms_key.this.arn
  iam_database_authentication_enabled = true
  ca_cert_identifier                  = "rds-ca-rsa2048-g1"

  multi_az               = true
  db_subnet_group_name   = aws_db_subnet_group.this.name
  vpc_security_group_ids = [aws_security_group.db.id]
  publicly_accessible    = false
  parameter_group_name   = aws_db_parameter_group.this.name

  backup_retention_period   = var.db_backup_retention_days
  backup_window             = "02:00-03:00"
  maintenance_window        = "sun:03:30-sun:04:30"
  copy_tags_to_snapshot     = true
  deletion_protection       = var.deletion_protection
  skip_final_snapshot       = false
  final_snapshot_identifier = "${var.name}-origin-final"
  delete_automated_backups  = false

  performance_insights_enabled          = true
  performance_insights_kms_key_id       = aws_kms_key.this.arn
  performance_insights_retention_period = 7
  monitoring_interval                   = 30
  monitoring_role_arn                   = aws_iam_role.rds_monitoring.arn
  enabled_cloudwatch_logs_exports       = ["postgresql", "upgrade"]

  tags = local.tags
}

################################################################################
# Internal ALB with TLS
################################################################################

resource "aws_lb" "this" {
  name_prefix                = "eo-"
  internal                   = var.internal
  load_balancer_type         = "application"
  security_groups            = [aws_security_group.alb.id]
  subnets                    = var.private_subnet_ids
  drop_invalid_header_fields = true
  enable_deletion_protection = var.deletion_protection
  # Sync long-polls hold requests open; keep the idle timeout above the long-poll wait.
  idle_timeout = 120

  access_logs {
    bucket  = var.alb_access_logs_bucket
    prefix  = "alb/${var.name}-origin"
    enabled = true
  }

  tags = local.tags
}

resource "aws_lb_target_group" "this" {
  name_prefix          = "eo-"
  port                 = local.container_port
  protocol             = "HTTPS"
  target_type          = "ip"
  vpc_id               = var.vpc_id
  deregistration_delay = 30

  health_check {
    enabled             = true
    protocol            = "HTTPS"
    path                = local.health_path
    matcher             = "200"
    interval            = 15
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

  # Optional mutual TLS at the ALB (default off): edges (and operators) must present a certificate that
  # chains to the CA bundle in S3. The ALB ends TLS, so the origin's own per-region certificate check
  # (--client-ca) cannot run behind it: see infra/terraform/README.md (TLS).
  dynamic "mutual_authentication" {
    for_each = var.client_ca_bundle_s3 == null ? [] : [var.client_ca_bundle_s3]

    content {
      mode            = "verify"
      trust_store_arn = aws_lb_trust_store.clients[0].arn
    }
  }

  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.this.arn
  }

  tags = local.tags
}

resource "aws_lb_trust_store" "clients" {
  count = var.client_ca_bundle_s3 == null ? 0 : 1

  name_prefix                      = "eo-"
  ca_certificates_bundle_s3_bucket = var.client_ca_bundle_s3.bucket
  ca_certificates_bundle_s3_key    = var.client_ca_bundle_s3.key

  tags = local.tags
}

resource "aws_route53_record" "this" {
  count = var.route53_zone_id == null ? 0 : 1

  zone_id = var.route53_zone_id
  name    = var.origin_domain_name
  type    = "A"

  alias {
    name                   = aws_lb.this.dns_name
    zone_id                = aws_lb.this.zone_id
    evaluate_target_health = true
  }
}

################################################################################
# ECS Fargate service
################################################################################

resource "aws_cloudwatch_log_group" "this" {
  name              = "/edgerec/${var.name}/origin"
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.this.arn

  tags = local.tags
}

resource "aws_ecs_cluster" "this" {
  name = "${var.name}-origin"

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

# Execution role: pulls the image, writes logs, reads the secrets it injects.
resource "aws_iam_role" "execution" {
  name_prefix        = "${var.name}-origin-exec-"
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
    resources = [
      aws_secretsmanager_secret.admin_token.arn,
      aws_secretsmanager_secret.sync_token.arn,
      aws_secretsmanager_secret.region_tokens.arn,
      aws_secretsmanager_secret.signing_key.arn,
      aws_db_instance.this.master_user_secret[0].secret_arn,
    ]
  }

  statement {
    sid       = "DecryptInjectedSecrets"
    actions   = ["kms:Decrypt"]
    resources = [aws_kms_key.this.arn]
  }
}

resource "aws_iam_role_policy" "execution_secrets" {
  name_prefix = "secrets-"
  role        = aws_iam_role.execution.id
  policy      = data.aws_iam_policy_document.execution_secrets.json
}

# Task role: the origin process calls no AWS API (blobs are in PostgreSQL); an empty role keeps it that way.
resource "aws_iam_role" "task" {
  name_prefix        = "${var.name}-origin-task-"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json

  tags = local.tags
}

locals {
  # Writes the task's TLS key pair (see tls_dir above) and exits; the origin starts once it succeeded.
  tls_init_script = <<-EOT
    import datetime, os, pathlib
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    d = pathlib.Path(os.environ["TLS_DIR"])
    d.mkdir(mode=0o700, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, os.environ["TLS_COMMON_NAME"])])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=825))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(os.environ["TLS_COMMON_NAME"])]), critical=False)
            .sign(key, hashes.SHA256()))
    pem = {"key.pem": key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()),
           "cert.pem": cert.public_bytes(serialization.Encoding.PEM)}
    for file, data in pem.items():
        fd = os.open(d / file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.write(fd, data)
        os.close(fd)
  EOT

  tls_init_container = {
    name                   = "tls-init"
    image                  = var.image
    essential              = false
    user                   = "10001:10001"
    readonlyRootFilesystem = true
    command                = ["python", "-c", local.tls_init_script]

    # Read by the script above, not by the app. No secret: the key is made here.
    environment = [
      { name = "TLS_DIR", value = local.tls_dir },
      { name = "TLS_COMMON_NAME", value = var.origin_domain_name },
    ]

    mountPoints = [
      { sourceVolume = "data", containerPath = local.data_dir, readOnly = false },
    ]

    logConfiguration = {
      logDriver = "awslogs"
      options = {
        awslogs-group         = aws_cloudwatch_log_group.this.name
        awslogs-region        = local.region
        awslogs-stream-prefix = "origin-tls-init"
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

    dependsOn = [
      { containerName = local.tls_init_container.name, condition = "SUCCESS" },
    ]

    portMappings = [
      {
        name          = "https"
        containerPort = local.container_port
        protocol      = "tcp"
      }
    ]

    # Non-secret configuration only. Secrets go through "secrets" below.
    environment = [
      # Production mode: the origin refuses weak or missing secrets and plain HTTP.
      { name = "EDGEREC_ENV", value = "production" },
      # awsvpc: the task's own ENI; the security group admits only the ALB.
      { name = "EDGEREC_ORIGIN_HOST", value = "0.0.0.0" },
      { name = "EDGEREC_ORIGIN_PORT", value = tostring(local.container_port) },
      # HTTPS on the ALB -> task hop too (target group protocol HTTPS), with the key pair tls-init made.
      # Not "behind a TLS proxy": the origin serves TLS itself, so production mode refuses to start without it.
      { name = "EDGEREC_ORIGIN_BEHIND_TLS_PROXY", value = "false" },
      { name = "EDGEREC_ORIGIN_TLS_CERT_FILE", value = local.tls_cert_file },
      { name = "EDGEREC_ORIGIN_TLS_KEY_FILE", value = local.tls_key_file },
      # No password in the DSN: libpq/asyncpg read it from PGPASSWORD (injected below from the RDS-managed secret).
      { name = "EDGEREC_ORIGIN_DSN", value = "postgresql://${var.db_username}@${aws_db_instance.this.address}:${aws_db_instance.this.port}/${var.db_name}?sslmode=verify-full" },
      # Local cache of the blobs stored in PostgreSQL (the app does not speak S3).
      { name = "EDGEREC_BLOB_DIR", value = local.blob_dir },
      # Change log kept before compaction; an edge further behind takes a snapshot (410).
      { name = "EDGEREC_LOG_RETENTION", value = var.change_log_retention },
    ]

    secrets = [
      { name = "EDGEREC_ADMIN_TOKEN", valueFrom = aws_secretsmanager_secret.admin_token.arn },
      { name = "EDGEREC_SYNC_TOKEN", valueFrom = aws_secretsmanager_secret.sync_token.arn },
      { name = "EDGEREC_REGION_TOKENS", valueFrom = aws_secretsmanager_secret.region_tokens.arn },
      { name = "EDGEREC_SIGNING_KEY", valueFrom = aws_secretsmanager_secret.signing_key.arn },
      { name = "PGPASSWORD", valueFrom = "${aws_db_instance.this.master_user_secret[0].secret_arn}:password::" },
    ]

    # Liveness: python's urllib (the slim image has no curl), over the task's own TLS on loopback: the
    # certificate is the task's self-signed one, so this probe does not verify it.
    healthCheck = {
      command     = ["CMD", "python", "-c", "import ssl,sys,urllib.request; sys.exit(0 if urllib.request.urlopen('https://127.0.0.1:8080/healthz', timeout=3, context=ssl._create_unverified_context()).status == 200 else 1)"]
      interval    = 15
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
        awslogs-stream-prefix = "origin"
      }
    }
  }
}

resource "aws_ecs_task_definition" "this" {
  family                   = "${var.name}-origin"
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

  # Fargate ephemeral storage (encrypted at rest, AES-256, Fargate-managed key) holds the blob cache.
  ephemeral_storage {
    size_in_gib = var.ephemeral_storage_gib
  }

  volume {
    name = "data"
  }

  volume {
    name = "tmp"
  }

  container_definitions = jsonencode([local.tls_init_container, local.container_definition])

  tags = local.tags
}

resource "aws_ecs_service" "this" {
  name                              = "${var.name}-origin"
  cluster                           = aws_ecs_cluster.this.id
  task_definition                   = aws_ecs_task_definition.this.arn
  desired_count                     = var.desired_count
  launch_type                       = "FARGATE"
  platform_version                  = "LATEST"
  health_check_grace_period_seconds = 60
  propagate_tags                    = "SERVICE"
  enable_ecs_managed_tags           = true
  enable_execute_command            = false

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

  depends_on = [aws_lb_listener.https]

  tags = local.tags
}
