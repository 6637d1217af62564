# No secret value is ever an output: only ARNs and names.

output "region" {
  description = "AWS region of this edge fleet."
  value       = local.region
}

output "markets" {
  description = "Market codes served here (EDGEREC_REGIONS)."
  value       = var.markets
}

output "alb_dns_name" {
  description = "DNS name of the edge ALB."
  value       = module.service.alb_dns_name
}

output "alb_arn_suffix" {
  description = "ARN suffix of the edge ALB (CloudWatch metrics dimension)."
  value       = module.service.alb_arn_suffix
}

output "target_group_arn_suffix" {
  description = "ARN suffix of the edge target group (CloudWatch metrics dimension)."
  value       = module.service.target_group_arn_suffix
}

output "cluster_name" {
  description = "ECS cluster of this edge region."
  value       = module.service.cluster_name
}

output "service_name" {
  description = "ECS service of this edge region."
  value       = module.service.service_name
}

output "task_security_group_id" {
  description = "Security group of the edge tasks (allow it at the origin)."
  value       = module.service.task_security_group_id
}

output "log_group_name" {
  description = "CloudWatch log group of the edge containers."
  value       = module.service.log_group_name
}

output "sync_token_secret" {
  description = "This region's sync-token secret, arn and name (value put out of band; the origin's region-tokens secret lists the same token for each of markets)."
  value       = { arn = module.service.secret_arns["sync_token"], name = local.sync_token_secret_name }
}
