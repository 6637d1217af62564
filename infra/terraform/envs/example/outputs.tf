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
    for m in local.edges :
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
  description = "Secret of the origin's all-regions sync token (value out of band; no edge holds it)."
  value       = module.origin.sync_token_secret_arn
}

output "region_tokens_secret_arn" {
  description = "Secret of the origin's per-region token list (EDGEREC_REGION_TOKENS; value out of band, composed from edge_sync_tokens)."
  value       = module.origin.region_tokens_secret_arn
}

output "signing_key_secret_arn" {
  description = "Secret of the origin's Ed25519 signing key (value out of band: the PEM from edgerec origin keygen)."
  value       = module.origin.signing_key_secret_arn
}

output "edge_sync_tokens" {
  description = "Per edge region: its sync-token secret (in that region) and the markets its token must be listed for in the origin's region-tokens secret. Names and ARNs only."
  value = {
    for m in local.edges :
    m.region => { secret_arn = m.sync_token_secret_arn, secret_name = m.sync_token_secret_name, markets = m.markets }
  }
}
