locals {
  name             = "edgerec-${var.environment}"
  edge_domain_name = "edges.${var.domain_name}"
  cdn_domain_name  = "reco.${var.domain_name}"
  origin_domain    = "origin.${var.domain_name}"
  edge_regions     = ["eu-west-1", "eu-central-1", "us-east-1"]

  # The CDN secret is replicated to every edge region, encrypted there with the AWS managed key.
  # (Each edge region creates its own sync-token secret: modules/edge_region.)
  replica_regions = { for r in local.edge_regions : r => null }

  # A replica has the primary's ARN with its own region.
  edge_secret_arns = {
    for r in local.edge_regions : r => {
      for key, arn in module.cdn.secret_arns : key => replace(arn, ":${module.cdn.cdn_secret_region}:", ":${r}:")
    }
  }

  edges = [module.edge_eu_west_1, module.edge_eu_central_1, module.edge_us_east_1]
}

module "origin" {
  source = "../../modules/origin"

  name = local.name
  tags = var.tags

  network = var.networks[var.origin_region]
  # Edges reach the origin over Transit Gateway / VPC peering.
  ingress_cidr_blocks = [for r in local.edge_regions : var.networks[r].vpc_cidr]

  certificate_arn    = var.certificates["origin"]
  origin_domain_name = local.origin_domain
  route53_zone_id    = var.origin_private_zone_id

  image = var.origin_image

  change_log_retention   = var.change_log_retention
  alb_access_logs_bucket = var.log_buckets[var.origin_region]
}

module "cdn" {
  source = "../../modules/cdn"
  providers = {
    aws = aws.us_east_1
  }

  name = local.name
  tags = var.tags

  aliases                    = [local.cdn_domain_name]
  acm_certificate_arn        = var.certificates["cloudfront"]
  edge_domain_name           = local.edge_domain_name
  cdn_secret_header_values   = var.cdn_secret_header_values
  secret_replica_regions     = local.replica_regions
  logging_bucket_domain_name = var.log_buckets["cloudfront"]
}

module "edge_eu_west_1" {
  source = "../../modules/edge_region"
  providers = {
    aws = aws.eu_west_1
  }

  name    = local.name
  tags    = var.tags
  markets = var.markets["eu-west-1"]

  network = var.networks["eu-west-1"]

  certificate_arn  = var.certificates["eu-west-1"]
  edge_domain_name = local.edge_domain_name
  route53_zone_id  = var.route53_zone_id

  image                    = var.edge_image
  origin_url               = module.origin.origin_url
  origin_public_keys       = var.origin_public_keys
  cdn_secret_arn           = local.edge_secret_arns["eu-west-1"].cdn_secret
  pseudonym_key_secret_arn = local.edge_secret_arns["eu-west-1"].pseudonym_key
  cdn_secret_header_values = var.cdn_secret_header_values

  alb_access_logs_bucket = var.log_buckets["eu-west-1"]
}

module "edge_eu_central_1" {
  source = "../../modules/edge_region"
  providers = {
    aws = aws.eu_central_1
  }

  name    = local.name
  tags    = var.tags
  markets = var.markets["eu-central-1"]

  network = var.networks["eu-central-1"]

  certificate_arn  = var.certificates["eu-central-1"]
  edge_domain_name = local.edge_domain_name
  route53_zone_id  = var.route53_zone_id

  image                    = var.edge_image
  origin_url               = module.origin.origin_url
  origin_public_keys       = var.origin_public_keys
  cdn_secret_arn           = local.edge_secret_arns["eu-central-1"].cdn_secret
  pseudonym_key_secret_arn = local.edge_secret_arns["eu-central-1"].pseudonym_key
  cdn_secret_header_values = var.cdn_secret_header_values

  alb_access_logs_bucket = var.log_buckets["eu-central-1"]
}

module "edge_us_east_1" {
  source = "../../modules/edge_region"
  providers = {
    aws = aws.us_east_1
  }

  name    = local.name
  tags    = var.tags
  markets = var.markets["us-east-1"]

  network = var.networks["us-east-1"]

  certificate_arn  = var.certificates["us-east-1"]
  edge_domain_name = local.edge_domain_name
  route53_zone_id  = var.route53_zone_id

  image                    = var.edge_image
  origin_url               = module.origin.origin_url
  origin_public_keys       = var.origin_public_keys
  cdn_secret_arn           = local.edge_secret_arns["us-east-1"].cdn_secret
  pseudonym_key_secret_arn = local.edge_secret_arns["us-east-1"].pseudonym_key
  # The CDN secret's primary lives in us-east-1, encrypted with the CDN module's key.
  secrets_kms_key_arns     = [module.cdn.kms_key_arn]
  cdn_secret_header_values = var.cdn_secret_header_values

  alb_access_logs_bucket = var.log_buckets["us-east-1"]
}

# Shoppers' name -> CloudFront.
resource "aws_route53_record" "cdn" {
  for_each = toset(["A", "AAAA"])

  zone_id = var.route53_zone_id
  name    = local.cdn_domain_name
  type    = each.value

  alias {
    name                   = module.cdn.distribution.domain_name
    zone_id                = module.cdn.distribution.hosted_zone_id
    evaluate_target_health = false
  }
}
