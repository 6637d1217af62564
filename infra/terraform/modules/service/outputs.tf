# Names, ARNs and ids only.

output "kms_key_arn" {
  description = "The service's customer managed KMS key: logs, and what the caller encrypts with it (secrets, database)."
  value       = module.kms_key.arn
}

output "secret_arns" {
  description = "ARN of each secret of var.secrets, by its key."
  value       = { for key, secret in aws_secretsmanager_secret.this : key => secret.arn }
}

output "log_group_name" {
  description = "CloudWatch log group of the containers."
  value       = aws_cloudwatch_log_group.this.name
}

output "alb_dns_name" {
  description = "DNS name of the load balancer."
  value       = aws_lb.this.dns_name
}

output "alb_zone_id" {
  description = "Hosted zone of the load balancer (for alias records)."
  value       = aws_lb.this.zone_id
}

output "alb_arn_suffix" {
  description = "ARN suffix of the load balancer (CloudWatch metrics dimension)."
  value       = aws_lb.this.arn_suffix
}

output "target_group_arn_suffix" {
  description = "ARN suffix of the target group (CloudWatch metrics dimension)."
  value       = aws_lb_target_group.this.arn_suffix
}

output "cluster_arn" {
  description = "ECS cluster ARN."
  value       = aws_ecs_cluster.this.arn
}

output "cluster_name" {
  description = "ECS cluster name."
  value       = aws_ecs_cluster.this.name
}

output "service_name" {
  description = "ECS service name."
  value       = aws_ecs_service.this.name
}

output "task_security_group_id" {
  description = "Security group of the tasks."
  value       = aws_security_group.tasks.id
}
