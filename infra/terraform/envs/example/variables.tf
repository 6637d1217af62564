variable "environment" {
  description = "Environment name, part of every resource name (e.g. \"prod\")."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9]{1,10}$", var.environment))
    error_message = "environment must be 2-11 lowercase letters or digits."
  }
}

variable "tags" {
  description = "Tags added to every resource (on top of the environment tags)."
  type        = map(string)
  default     = {}
}

variable "origin_region" {
  description = "Region of the origin (must be one of the configured provider regions)."
  type        = string
  default     = "eu-west-1"

  validation {
    condition     = contains(["eu-west-1", "eu-central-1", "us-east-1"], var.origin_region)
    error_message = "origin_region must be eu-west-1, eu-central-1 or us-east-1 in this example."
  }
}

variable "domain_name" {
  description = "Parent domain in route53_zone_id (e.g. \"shop.example.com\"): reco.<domain> for shoppers, edges.<domain> for CloudFront's origin, origin.<domain> for the sync API."
  type        = string
}

variable "route53_zone_id" {
  description = "Public Route 53 zone of domain_name."
  type        = string
}

variable "origin_private_zone_id" {
  description = "Private Route 53 zone (associated with the edge VPCs) for origin.<domain>; null to manage that record elsewhere."
  type        = string
  default     = null
}

variable "edge_image" {
  description = "Edge image (infra/docker/Dockerfile.edge), pinned by digest, replicated to each region's registry."
  type        = string
}

variable "origin_image" {
  description = "Origin image (infra/docker/Dockerfile.origin), pinned by digest."
  type        = string
}

variable "cdn_secret_header_values" {
  description = "CDN shared-secret values (one; two during a rotation, new first). Supply via TF_VAR_cdn_secret_header_values from the CI secret store, never in a file."
  type        = list(string)
  sensitive   = true
}

variable "origin_public_keys" {
  description = "The origin's Ed25519 public key(s), not secret (EDGEREC_ORIGIN_PUBLIC_KEY on every edge): the base64 line of signing_key.pub.pem from `edgerec origin keygen`. Two during a signing-key rotation (README)."
  type        = list(string)
}

variable "change_log_retention" {
  description = "Origin change-log retention (EDGEREC_LOG_RETENTION), e.g. \"7d\": longer than the longest edge outage you want to heal with deltas rather than a snapshot."
  type        = string
  default     = "7d"
}

variable "certificates" {
  description = "ACM certificate ARNs: \"cloudfront\" (us-east-1, reco.<domain>), \"origin\" (origin region, origin.<domain>) and one per edge region keyed by region (edges.<domain>)."
  type        = map(string)

  validation {
    condition     = alltrue([for k in ["cloudfront", "origin", "eu-west-1", "eu-central-1", "us-east-1"] : contains(keys(var.certificates), k)])
    error_message = "certificates needs keys cloudfront, origin, eu-west-1, eu-central-1 and us-east-1."
  }
}

variable "networks" {
  description = "Existing network per region: VPC, public subnets (edge ALB), private subnets (tasks, origin ALB), database subnets (origin region only), VPC CIDR."
  type = map(object({
    vpc_id              = string
    vpc_cidr            = string
    public_subnet_ids   = list(string)
    private_subnet_ids  = list(string)
    database_subnet_ids = optional(list(string), [])
  }))

  validation {
    condition     = alltrue([for k in ["eu-west-1", "eu-central-1", "us-east-1"] : contains(keys(var.networks), k)])
    error_message = "networks needs keys eu-west-1, eu-central-1 and us-east-1."
  }
}

variable "log_buckets" {
  description = "Existing log buckets per region (ALB access logs), plus \"cloudfront\": the regional domain name of the CloudFront standard-log bucket."
  type        = map(string)
}

variable "markets" {
  description = "Market codes each edge region serves."
  type        = map(list(string))
  default = {
    "eu-west-1"    = ["GB", "IE", "FR", "ES", "PT"]
    "eu-central-1" = ["DE", "AT", "CH", "NL", "PL"]
    "us-east-1"    = ["US", "CA"]
  }
}
