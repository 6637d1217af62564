# Inputs passed on to modules/service (name, network, certificate, image, task size, logs) are validated there. name,
# tags and log_retention_days: deployment_variables.tf; secret_recovery_window_days: secret_variables.tf;
# cdn_secret_header_values: cdn_secret_variables.tf (links to ../../shared/).

variable "markets" {
  description = "Market codes this region serves (EDGEREC_REGIONS), e.g. [\"DE\", \"FR\"]."
  type        = list(string)

  validation {
    condition     = length(var.markets) > 0 && alltrue([for m in var.markets : can(regex("^[A-Z]{2}$", m))])
    error_message = "markets must be a non-empty list of two-letter upper-case market codes."
  }
}

variable "network" {
  description = "This region's network: its VPC, the public subnets (at least two AZs) of the internet-facing ALB that CloudFront connects to, and the private subnets (at least two AZs) of the Fargate tasks."
  type = object({
    vpc_id             = string
    public_subnet_ids  = list(string)
    private_subnet_ids = list(string)
  })
}

variable "certificate_arn" {
  description = "ACM certificate in this region for the latency-routed edge domain (edge_domain_name)."
  type        = string
}

variable "edge_domain_name" {
  description = "Latency-routed DNS name shared by all edge regions; CloudFront's origin domain."
  type        = string
}

variable "route53_zone_id" {
  description = "Route 53 zone holding edge_domain_name; this module adds its region's latency record."
  type        = string
}

variable "origin_url" {
  description = "URL of the origin's sync API (EDGEREC_ORIGIN_URL), https only."
  type        = string

  validation {
    condition     = startswith(var.origin_url, "https://")
    error_message = "origin_url must use https."
  }
}

variable "origin_public_keys" {
  description = "The origin's Ed25519 public key(s) (EDGEREC_ORIGIN_PUBLIC_KEY), not secret: each the base64 line of `signing_key.pub.pem` (`sed -n 2p signing_key.pub.pem`) or of the raw 32-byte key. One normally; during a signing-key rotation the current and the next key (order does not matter: the edge picks the key by the payload's key id)."
  type        = list(string)

  validation {
    condition     = length(var.origin_public_keys) >= 1 && length(var.origin_public_keys) <= 3 && alltrue([for k in var.origin_public_keys : can(regex("^(MCowBQYDK2VwAyEA)?[A-Za-z0-9+/]{43}=$", k))])
    error_message = "Give 1-3 Ed25519 public keys, each base64 (the middle line of signing_key.pub.pem, or the raw 32-byte key)."
  }
}

variable "max_staleness_s" {
  description = "EDGEREC_MAX_STALENESS_S: /readyz fails after this many seconds without a verified answer from the origin; 0 = never. Keep 0 in production (see README): a failing readiness makes the ALB drop and ECS replace every edge task during an origin outage."
  type        = number
  default     = 0

  validation {
    condition     = var.max_staleness_s == 0 || var.max_staleness_s >= 120
    error_message = "max_staleness_s must be 0 (never) or at least 120 seconds (several long-poll cycles and backoffs)."
  }
}

variable "untrusted_cdn_headers" {
  description = "EDGEREC_UNTRUSTED_CDN_HEADERS: what an edge does with CDN headers (geo, X-Forwarded-For) that arrive without a valid CDN secret: \"refuse\" (403) or \"ignore\". The ALB only forwards requests carrying the secret, so \"refuse\" never fires unless something bypasses or misconfigures that gate; the CDN-secret rotation must then redeploy the edges before CloudFront switches values (README)."
  type        = string
  default     = "refuse"

  validation {
    condition     = contains(["refuse", "ignore"], var.untrusted_cdn_headers)
    error_message = "untrusted_cdn_headers must be refuse or ignore."
  }
}

variable "cdn_secret_arn" {
  description = "ARN of the CDN shared-secret replica in this region (EDGEREC_CDN_SECRET)."
  type        = string
}

variable "pseudonym_key_secret_arn" {
  description = "ARN of the pseudonym key replica in this region (EDGEREC_PSEUDONYM_KEY): the same key on every edge."
  type        = string
}

variable "secrets_kms_key_arns" {
  description = "Other KMS keys that encrypt injected secrets in this region, i.e. the CDN secret's replica when not on the AWS managed key (this module's own key, which encrypts the sync token, is always allowed)."
  type        = list(string)
  default     = []
}

variable "image" {
  description = "Container image of the edge (built from infra/docker/Dockerfile.edge), pinned by digest or immutable tag."
  type        = string
}

variable "task" {
  description = "Fargate size of an edge task, passed to modules/service (which validates it and defaults an attribute left out): cpu units (1024; one uvicorn worker per vCPU), memory MiB (2048; holds the whole EdgeState (offers, embeddings, model) twice during a swap), cpu_architecture the image is built for (X86_64 or ARM64), ephemeral_storage_gib (30) for EDGEREC_EDGE_DATA_DIR (persisted snapshot and model bundle)."
  # The object type, its defaults and validations are modules/service's variable "task", written once.
  type    = any
  default = {}
}

variable "min_capacity" {
  description = "Minimum number of edge tasks in this region."
  type        = number
  default     = 2

  validation {
    condition     = var.min_capacity >= 1
    error_message = "min_capacity must be at least 1."
  }
}

variable "max_capacity" {
  description = "Maximum number of edge tasks in this region."
  type        = number
  default     = 20
}

variable "cpu_target_percent" {
  description = "Target average CPU utilisation for autoscaling."
  type        = number
  default     = 60

  validation {
    condition     = var.cpu_target_percent > 10 && var.cpu_target_percent < 95
    error_message = "cpu_target_percent must be between 10 and 95."
  }
}

variable "requests_per_target" {
  description = "Target ALB requests per task (per minute) for autoscaling; size it from the edge benchmark (req/s per task x 60 x headroom)."
  type        = number
  default     = 120000
}

variable "alb_access_logs_bucket" {
  description = "Existing bucket in this region (with the ELB log delivery policy) receiving the ALB's access logs."
  type        = string
}

variable "deletion_protection" {
  description = "Deletion protection for the load balancer."
  type        = bool
  default     = true
}

variable "origin_ca_bundle" {
  description = "PEM CA bundle the edges verify the origin's certificate against (EDGEREC_ORIGIN_CA_FILE), when the origin ALB's certificate is from a private CA (ACM Private CA); null = the system trust store (a public ACM certificate). Not secret."
  type        = string
  default     = null

  validation {
    condition     = var.origin_ca_bundle == null || can(regex("-----BEGIN CERTIFICATE-----", var.origin_ca_bundle))
    error_message = "origin_ca_bundle must be PEM text (-----BEGIN CERTIFICATE-----)."
  }
}

variable "client_certificate_secret_arn" {
  description = "Optional mutual TLS towards the origin (null = off): ARN of a Secrets Manager secret in this region holding JSON {\"certificate\": PEM chain, \"private_key\": PEM} of the client certificate these edges present (EDGEREC_CLIENT_CERT_FILE/_KEY_FILE), naming this region's markets (edge.<market>). Pair with the origin module's client_ca_bundle_s3; add the secret's KMS key to secrets_kms_key_arns unless it is this module's."
  type        = string
  default     = null

  validation {
    condition     = var.client_certificate_secret_arn == null || can(regex("^arn:aws[a-z-]*:secretsmanager:", var.client_certificate_secret_arn))
    error_message = "client_certificate_secret_arn must be a Secrets Manager secret ARN."
  }
}
