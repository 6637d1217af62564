# No secret value is ever an output: only ARNs and names.

output "origin_url" {
  description = "URL the edges use as EDGEREC_ORIGIN_URL."
  value       = "https://${var.origin_domain_name}"
}

output "alb_dns_name" {
  description = "DNS name of the origin ALB."
  value       = module.service.alb_dns_name
}

output "alb_zone_id" {
  description = "Hosted zone of the origin ALB (for alias records)."
  value       = module.service.alb_zone_id
}

output "cluster_arn" {
  description = "ECS cluster of the origin."
  value       = module.service.cluster_arn
}

output "service_name" {
  description = "ECS service of the origin."
  value       = module.service.service_name
}

output "task_security_group_id" {
  description = "Security group of the origin tasks."
  value       = module.service.task_security_group_id
}

output "db_endpoint" {
  description = "PostgreSQL endpoint (host:port)."
  value       = aws_db_instance.this.endpoint
}

output "db_instance_identifier" {
  description = "RDS instance identifier (for point-in-time restore)."
  value       = aws_db_instance.this.identifier
}

output "db_master_user_secret_arn" {
  description = "ARN of the RDS-managed secret holding the database password."
  value       = aws_db_instance.this.master_user_secret[0].secret_arn
}

output "kms_key_arn" {
  description = "Customer managed KMS key of the origin."
  value       = module.service.kms_key_arn
}

output "admin_token_secret_arn" {
  description = "ARN of the admin token secret (value put out of band)."
  value       = aws_secretsmanager_secret.this["admin_token"].arn
}

output "sync_token_secret_arn" {
  description = "ARN of the all-regions sync token secret (EDGEREC_SYNC_TOKEN at the origin; value put out of band)."
  value       = aws_secretsmanager_secret.this["sync_token"].arn
}

output "region_tokens_secret_arn" {
  description = "ARN of the per-region sync tokens secret (EDGEREC_REGION_TOKENS; value put out of band)."
  value       = aws_secretsmanager_secret.this["region_tokens"].arn
}

output "signing_key_secret_arn" {
  description = "ARN of the origin's Ed25519 signing key secret (EDGEREC_SIGNING_KEY; value put out of band)."
  value       = aws_secretsmanager_secret.this["signing_key"].arn
}
