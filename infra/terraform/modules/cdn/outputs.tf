# No secret value is ever an output: only ARNs, ids and names.

output "distribution" {
  description = "The CloudFront distribution: id (for invalidations), domain_name and hosted_zone_id (the target of the aliases' DNS records)."
  value = {
    id             = aws_cloudfront_distribution.this.id
    domain_name    = aws_cloudfront_distribution.this.domain_name
    hosted_zone_id = aws_cloudfront_distribution.this.hosted_zone_id
  }
}

output "secret_arns" {
  description = "ARN of each fleet-wide edge secret in the primary region (cdn_secret_region), by key: cdn_secret and pseudonym_key; a replica in another region has the same ARN with that region."
  value       = { for key, secret in aws_secretsmanager_secret.this : key => secret.arn }
}

output "web_acl_arn" {
  description = "WAFv2 web ACL attached to the distribution."
  value       = aws_wafv2_web_acl.this.arn
}

output "cdn_secret_region" {
  description = "Region of the primary CDN secret."
  value       = local.region
}

output "kms_key_arn" {
  description = "KMS key of the CDN module (encrypts the CDN secret's primary and the WAF logs)."
  value       = module.kms_key.arn
}
