# No secret value is ever an output: only ARNs, ids and names.

output "distribution_id" {
  description = "CloudFront distribution id (for invalidations)."
  value       = aws_cloudfront_distribution.this.id
}

output "distribution_domain_name" {
  description = "CloudFront domain name (target of the aliases' DNS records)."
  value       = aws_cloudfront_distribution.this.domain_name
}

output "distribution_hosted_zone_id" {
  description = "Hosted zone id for alias records to the distribution."
  value       = aws_cloudfront_distribution.this.hosted_zone_id
}

output "web_acl_arn" {
  description = "WAFv2 web ACL attached to the distribution."
  value       = aws_wafv2_web_acl.this.arn
}

output "pseudonym_key_secret_arn" {
  description = "ARN of the edges' pseudonym key secret in us-east-1; replicas in other regions have the same ARN with that region."
  value       = aws_secretsmanager_secret.this["pseudonym_key"].arn
}

output "cdn_secret_arn" {
  description = "ARN of the CDN secret in us-east-1; replicas in other regions have the same ARN with that region."
  value       = aws_secretsmanager_secret.this["cdn_secret"].arn
}

output "cdn_secret_region" {
  description = "Region of the primary CDN secret."
  value       = local.region
}

output "kms_key_arn" {
  description = "KMS key of the CDN module (encrypts the CDN secret's primary and the WAF logs)."
  value       = module.kms_key.arn
}
