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
  value       = module.cdn.distribution.id
}

output "edge_regions" {
  description = "Per edge region: its ECS cluster and service, the markets it serves, and its sync-token secret (arn and name, in that region), whose token the origin's region-tokens secret must list for each of those markets. Names and ARNs only."
  value = {
    for m in local.edges :
    m.region => { cluster = m.cluster_name, service = m.service_name, markets = m.markets, sync_token_secret = m.sync_token_secret }
  }
}

output "origin_service" {
  description = "ECS cluster/service of the origin."
  value       = { cluster = module.origin.cluster_arn, service = module.origin.service_name }
}

output "origin_db_instance" {
  description = "RDS instance of the origin (for point-in-time restore)."
  value       = module.origin.database.instance_identifier
}

output "origin_secret_arns" {
  description = "The origin's secrets to put the values into (out of band), by key: admin_token; sync_token (all regions, no edge holds it); region_tokens (EDGEREC_REGION_TOKENS, composed from edge_regions); signing_key (the Ed25519 PEM from edgerec origin keygen)."
  value       = module.origin.secret_arns
}
