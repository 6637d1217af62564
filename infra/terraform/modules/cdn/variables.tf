variable "name" {
  description = "Name prefix for every resource of the CDN (e.g. \"edgerec-prod\")."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,30}[a-z0-9]$", var.name))
    error_message = "name must be 3-32 characters of lowercase letters, digits and hyphens, starting with a letter."
  }
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}

variable "aliases" {
  description = "Shopper-facing domain names of the distribution (e.g. [\"reco.example.com\"])."
  type        = list(string)

  validation {
    condition     = length(var.aliases) > 0
    error_message = "Give at least one alias."
  }
}

variable "acm_certificate_arn" {
  description = "ACM certificate in us-east-1 covering the aliases."
  type        = string

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:acm:us-east-1:", var.acm_certificate_arn))
    error_message = "CloudFront needs an ACM certificate in us-east-1."
  }
}

variable "edge_domain_name" {
  description = "Latency-routed Route 53 name of the edge fleets (each edge_region module adds its record); the distribution's origin."
  type        = string
}

variable "cdn_secret_header_values" {
  description = "CDN shared-secret values (sensitive). The first is injected as X-Edgerec-CDN-Secret on every origin request; during a rotation the second (old) one stays accepted by the edges. Stored in Secrets Manager for the edge containers."
  type        = list(string)
  sensitive   = true

  validation {
    condition     = length(var.cdn_secret_header_values) >= 1 && length(var.cdn_secret_header_values) <= 2 && alltrue([for v in var.cdn_secret_header_values : length(v) >= 32 && !strcontains(v, ",")])
    error_message = "Give one or two CDN secret values of at least 32 characters, without commas."
  }
}

variable "secret_replica_regions" {
  description = "Edge regions the CDN-secret secret is replicated to. Map of region to KMS key ARN there (null for the AWS managed key)."
  type        = map(string)
  default     = {}
}

variable "secret_recovery_window_days" {
  description = "Days a deleted secret stays recoverable."
  type        = number
  default     = 7
}

variable "price_class" {
  description = "CloudFront price class."
  type        = string
  default     = "PriceClass_All"

  validation {
    condition     = contains(["PriceClass_All", "PriceClass_200", "PriceClass_100"], var.price_class)
    error_message = "price_class must be PriceClass_All, PriceClass_200 or PriceClass_100."
  }
}

variable "max_ttl_seconds" {
  description = "Ceiling on how long CloudFront keeps an answer the edge marked cacheable with Cache-Control."
  type        = number
  default     = 300
}

variable "rate_limit_per_5min" {
  description = "Requests per client IP per 5 minutes before the WAF blocks it."
  type        = number
  default     = 2000

  validation {
    condition     = var.rate_limit_per_5min >= 100
    error_message = "WAF rate-based rules need a limit of at least 100."
  }
}

variable "logging_bucket_domain_name" {
  description = "Bucket (regional domain name, ACLs enabled for the awslogsdelivery account) receiving CloudFront standard logs."
  type        = string
}

variable "log_retention_days" {
  description = "CloudWatch Logs retention of the WAF logs."
  type        = number
  default     = 365

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.log_retention_days)
    error_message = "log_retention_days must be a value CloudWatch Logs accepts."
  }
}
