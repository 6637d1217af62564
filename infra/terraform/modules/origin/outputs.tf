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

output "kms_key_arn" {
  description = "Customer managed KMS key of the origin."
  value       = module.service.kms_key_arn
}

output "database" {
  description = "The PostgreSQL instance: endpoint (host:port), instance_identifier (for point-in-time restore) and master_user_secret_arn (the RDS-managed secret holding the password)."
  value = {
    endpoint               = aws_db_instance.this.endpoint
    instance_identifier    = aws_db_instance.this.identifier
    master_user_secret_arn = aws_db_instance.this.master_user_secret[0].secret_arn
  }
}

output "secret_arns" {
  description = "ARN of each origin secret (values put out of band), by key: admin_token, sync_token (all regions, EDGEREC_SYNC_TOKEN), region_tokens (EDGEREC_REGION_TOKENS), signing_key (Ed25519, EDGEREC_SIGNING_KEY)."
  value       = module.service.secret_arns
}
