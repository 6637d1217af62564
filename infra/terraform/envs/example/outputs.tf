# Names and endpoints only: no secret value is an output.

output "shopper_url" {
  description = "Public URL of the recommendation API."
  value       = "https://${local.cdn_domain_name}"
}

output "origin_url" {
  description = "Origin sync/admin API URL (private network)."
  value       = module.origin.origin_url
}

output "cloudfront_distribution_id" {
  description = "CloudFront distribution id."
  value       = module.cdn.distribution_id
}

output "edge_services" {
  description = "ECS cluster/service per edge region."
  value = {
    for m in [module.edge_eu_west_1, module.edge_eu_central_1, module.edge_us_east_1] :
    m.region => { cluster = m.cluster_name, service = m.service_name, markets = m.markets }
  }
}

output "origin_service" {
  description = "ECS cluster/service of the origin."
  value       = { cluster = module.origin.cluster_arn, service = module.origin.service_name }
}

output "origin_db_instance" {
  description = "RDS instance of the origin (for point-in-time restore)."
  value       = module.origin.db_instance_identifier
}

output "admin_token_secret_arn" {
  description = "Secret to put the admin token into (value out of band)."
  value       = module.origin.admin_token_secret_arn
}

output "sync_token_secret_arn" {
  description = "Secret to put the sync token into (value out of band); replicated to the edge regions."
  value       = module.origin.sync_token_secret_arn
}
