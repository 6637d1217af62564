# name, tags and log_retention_days: deployment_variables.tf; secret_recovery_window_days: secret_variables.tf;
# cdn_secret_header_values: cdn_secret_variables.tf (links to ../../shared/).

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

variable "secret_replica_regions" {
  description = "Edge regions the CDN-secret secret is replicated to. Map of region to KMS key ARN there (null for the AWS managed key)."
  type        = map(string)
  default     = {}
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
