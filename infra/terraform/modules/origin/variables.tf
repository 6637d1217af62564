# Inputs passed on to modules/service (name, network, certificate, image, task size, logs) are validated there. name,
# tags and log_retention_days: deployment_variables.tf; secret_recovery_window_days: secret_variables.tf (links to
# ../../shared/).

variable "network" {
  description = "The origin's network: the VPC of its load balancer, tasks and database, its private subnets (at least two AZs: the internal ALB and the Fargate tasks) and its isolated database subnets (at least two AZs: the Multi-AZ PostgreSQL instance)."
  type = object({
    vpc_id              = string
    private_subnet_ids  = list(string)
    database_subnet_ids = list(string)
  })

  validation {
    condition     = length(var.network.database_subnet_ids) >= 2
    error_message = "Give at least two database subnets in different availability zones."
  }
}

variable "ingress_cidr_blocks" {
  description = "CIDR blocks allowed to reach the origin's HTTPS listener: the edge regions' VPCs (over peering/Transit Gateway) and the operators' network."
  type        = list(string)

  validation {
    condition     = length(var.ingress_cidr_blocks) > 0 && alltrue([for c in var.ingress_cidr_blocks : can(cidrhost(c, 0)) && c != "0.0.0.0/0"])
    error_message = "ingress_cidr_blocks must be valid, non-empty and must not contain 0.0.0.0/0: the origin is not a public service."
  }
}

variable "internal" {
  description = "Whether the origin ALB is internal (reached over private networking). Keep true unless edges reach the origin over the internet."
  type        = bool
  default     = true
}

variable "certificate_arn" {
  description = "ACM certificate (in the origin's region) for origin_domain_name, served by the HTTPS listener."
  type        = string
}

variable "origin_domain_name" {
  description = "DNS name the edges use to reach the origin (EDGEREC_ORIGIN_URL is https://<this>)."
  type        = string
}

variable "route53_zone_id" {
  description = "Route 53 zone where the origin's alias record is created; null to manage DNS elsewhere."
  type        = string
  default     = null
}

variable "image" {
  description = "Container image of the origin (built from infra/docker/Dockerfile.origin), pinned by digest or immutable tag."
  type        = string
}

variable "task" {
  description = "Fargate size of an origin task, passed to modules/service (which validates it and defaults an attribute left out): cpu units (1024), memory MiB (2048), cpu_architecture the image is built for (X86_64 or ARM64), ephemeral_storage_gib (30), which holds the local model-blob cache (EDGEREC_BLOB_DIR)."
  # The object type, its defaults and validations are modules/service's variable "task", written once.
  type    = any
  default = {}
}

variable "desired_count" {
  description = "Number of origin tasks (spread over the private subnets' AZs)."
  type        = number
  default     = 2

  validation {
    condition     = var.desired_count >= 0
    error_message = "desired_count must not be negative."
  }
}

variable "db_engine_version" {
  description = "PostgreSQL major (or major.minor) version."
  type        = string
  default     = "16"
}

variable "db_instance_class" {
  description = "RDS instance class."
  type        = string
  default     = "db.m7g.large"
}

variable "db_allocated_storage" {
  description = "Initial storage (GiB)."
  type        = number
  default     = 50
}

variable "db_max_allocated_storage" {
  description = "Storage autoscaling ceiling (GiB)."
  type        = number
  default     = 500
}

variable "db_name" {
  description = "Database name."
  type        = string
  default     = "edgerec"
}

variable "db_username" {
  description = "Master user name (its password is generated and rotated by RDS in Secrets Manager)."
  type        = string
  default     = "edgerec"
}

variable "db_backup_retention_days" {
  description = "Automated backup retention (days); bounds point-in-time recovery."
  type        = number
  default     = 14

  validation {
    condition     = var.db_backup_retention_days >= 7 && var.db_backup_retention_days <= 35
    error_message = "db_backup_retention_days must be between 7 and 35."
  }
}

variable "deletion_protection" {
  description = "Deletion protection for the database and the load balancer."
  type        = bool
  default     = true
}

variable "change_log_retention" {
  description = "How much change log the origin keeps before compaction (EDGEREC_LOG_RETENTION): an age (\"7d\", \"12h\", \"30m\") or a number of versions (\"100000\"); \"0\" keeps everything. An edge further behind than this takes a full snapshot instead of deltas."
  type        = string
  default     = "7d"

  validation {
    condition     = can(regex("^([0-9]+|[0-9]+(\\.[0-9]+)?[smhd])$", var.change_log_retention))
    error_message = "change_log_retention must be a number of versions (100000), an age such as 7d, 12h, 30m, 600s, or 0."
  }
}

variable "alb_access_logs_bucket" {
  description = "Existing bucket (with the ELB log delivery policy) receiving the ALB's access logs."
  type        = string
}

variable "client_ca_bundle_s3" {
  description = "Optional mutual TLS at the origin ALB (null = off): the S3 object (bucket, key) holding the PEM CA bundle that edges' and operators' client certificates must chain to (an ALB trust store, mode verify). Edges present theirs with edge_region's client_certificate_secret_arn."
  type = object({
    bucket = string
    key    = string
  })
  default = null
}
