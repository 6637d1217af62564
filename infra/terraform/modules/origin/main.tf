data "aws_partition" "current" {}

locals {
  partition = data.aws_partition.current.partition

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
# Secrets. Terraform creates the containers only; the values are put out of
# band (see infra/terraform/README.md) so that they never appear in code, plans,
# state or outputs. None is replicated: the edges' own tokens live in one secret
# per edge region (modules/edge_region), so no edge holds a token that syncs
# another region's data, and edges present their region's token, never sync-token.
################################################################################

locals {
  # key => the secret's name below <name>/, the variable it is injected as, and what it holds. modules/service
  # creates them on its KMS key.
  secrets = {
    admin_token   = { name = "admin-token", description = "edgerec origin admin API token (EDGEREC_ADMIN_TOKEN)." }
    sync_token    = { name = "sync-token", description = "edgerec all-regions sync token(s) accepted by the origin (EDGEREC_SYNC_TOKEN); transitional/break-glass, no edge holds it." }
    region_tokens = { name = "region-tokens", description = "edgerec per-region edge sync tokens accepted by the origin (EDGEREC_REGION_TOKENS: GB=new|old,DE=...)." }
    signing_key   = { name = "signing-key", description = "edgerec origin Ed25519 signing key, PEM (EDGEREC_SIGNING_KEY); made by `edgerec origin keygen`." }
  }
}

################################################################################
# The service: internal ALB with TLS (optional mutual TLS), ECS Fargate, on the
# hardened layout of modules/service
################################################################################

module "service" {
  source = "../service"

  name            = var.name
  component       = "origin"
  prefix          = "${var.name}-origin"
  iam_name_prefix = "${var.name}-origin"
  tags            = local.tags

  kms_key_description = "${var.name} origin: database (incl. model blobs), secrets, logs"
  log_retention_days  = var.log_retention_days

  network = {
    vpc_id          = var.network.vpc_id
    alb_subnet_ids  = var.network.private_subnet_ids
    task_subnet_ids = var.network.private_subnet_ids
  }
  internal        = var.internal
  alb_name_prefix = "eo-"
  alb_description = "edgerec origin ALB: HTTPS from the edge VPCs and operators"
  alb_ingress     = { for c in var.ingress_cidr_blocks : c => { description = "HTTPS from ${c}", cidr_ipv4 = c } }
  # Sync long-polls hold requests open; keep the idle timeout above the long-poll wait.
  idle_timeout           = 120
  alb_access_logs_bucket = var.alb_access_logs_bucket
  deletion_protection    = var.deletion_protection
  certificate_arn        = var.certificate_arn
  client_ca_bundle_s3    = var.client_ca_bundle_s3

  # HTTPS on the ALB -> task hop too, with the key pair tls-init made (the ALB does not verify it).
  target_protocol         = "HTTPS"
  health_check_path       = local.health_path
  health_check_interval   = 15
  tasks_https_description = "HTTPS to AWS APIs (ECR, Secrets Manager, Logs) via VPC endpoints or NAT"

  image          = var.image
  containers     = [local.tls_init_container, local.container_definition]
  container_name = local.container_name
  container_port = local.container_port
  data_dir       = local.data_dir
  task           = var.task

  # The four origin secrets are this module's; the database password's secret is RDS's.
  secrets                     = local.secrets
  secret_recovery_window_days = var.secret_recovery_window_days
  secret_arns                 = [aws_db_instance.this.master_user_secret[0].secret_arn]

  # No autoscaling policy: min = max pins the count at desired_count.
  min_capacity = var.desired_count
  max_capacity = var.desired_count
}

# The database admits the origin tasks only.
resource "aws_vpc_security_group_egress_rule" "tasks_to_db" {
  security_group_id            = module.service.task_security_group_id
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
  vpc_id      = var.network.vpc_id

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
  referenced_security_group_id = module.service.task_security_group_id

  tags = local.tags
}

################################################################################
# RDS PostgreSQL: Multi-AZ, encrypted, backed up, TLS enforced
################################################################################

resource "aws_db_subnet_group" "this" {
  name_prefix = "${var.name}-origin-"
  description = "edgerec origin database subnets"
  subnet_ids  = var.network.database_subnet_ids

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
  kms_key_id                 = module.service.kms_key_arn

  db_name                             = var.db_name
  username                            = var.db_username
  manage_master_user_password         = true
  master_user_secret_kms_key_id       = module.service.kms_key_arn
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
  performance_insights_kms_key_id       = module.service.kms_key_arn
  performance_insights_retention_period = 7
  monitoring_interval                   = 30
  monitoring_role_arn                   = aws_iam_role.rds_monitoring.arn
  enabled_cloudwatch_logs_exports       = ["postgresql", "upgrade"]

  tags = local.tags
}

resource "aws_route53_record" "this" {
  count = var.route53_zone_id == null ? 0 : 1

  zone_id = var.route53_zone_id
  name    = var.origin_domain_name
  type    = "A"

  alias {
    name                   = module.service.alb_dns_name
    zone_id                = module.service.alb_zone_id
    evaluate_target_health = true
  }
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
    name      = "tls-init"
    essential = false
    command   = ["python", "-c", local.tls_init_script]

    # Read by the script above, not by the app. No secret: the key is made here.
    environment = [
      { name = "TLS_DIR", value = local.tls_dir },
      { name = "TLS_COMMON_NAME", value = var.origin_domain_name },
    ]
  }

  container_definition = {
    name        = local.container_name
    essential   = true
    stopTimeout = 30

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
      { name = "EDGEREC_ADMIN_TOKEN", valueFrom = module.service.secret_arns["admin_token"] },
      { name = "EDGEREC_SYNC_TOKEN", valueFrom = module.service.secret_arns["sync_token"] },
      { name = "EDGEREC_REGION_TOKENS", valueFrom = module.service.secret_arns["region_tokens"] },
      { name = "EDGEREC_SIGNING_KEY", valueFrom = module.service.secret_arns["signing_key"] },
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
  }
}
