# CloudFront and its WAF are global and managed through us-east-1: configure this module's provider there.

data "aws_region" "current" {}

locals {
  region = data.aws_region.current.name

  # Names shared with the application: keep in step with infra/app_contract.json (tests/infra checks it).
  cdn_secret_header = "X-Edgerec-CDN-Secret"
  geo_headers       = ["CloudFront-Viewer-Country"]
  origin_id         = "edges"

  # The query parameters of the anonymous GET /v1/recommendations (edge_node/validation.py QUERY_FIELDS).
  # Only these are in the cache key and forwarded: any other parameter is a 422 at the edge, and a cache
  # key without it must not point at an answer computed with it.
  recommendation_query_strings = ["region", "k", "slot", "device"]

  tags = merge(var.tags, {
    "edgerec:component" = "cdn"
  })
}

module "kms_key" {
  source = "../kms_key"

  alias             = "${var.name}-cdn"
  description       = "${var.name} CDN: WAF logs, CDN secret"
  log_group_pattern = "aws-waf-logs-${var.name}*"
  tags              = local.tags
}

################################################################################
# Fleet-wide edge secrets, replicated to every edge region (secret_replica_regions)
#   cdn-secret     EDGEREC_CDN_SECRET     the CDN shared secret. Terraform must know this value anyway
#                                         (CloudFront injects it, the edge ALBs match it), so it is a
#                                         sensitive input, never an output.
#   pseudonym-key  EDGEREC_PSEUDONYM_KEY  the same value on every edge, so that a shopper's events carry
#                                         one pseudonym fleet-wide. Terraform creates the container only;
#                                         the value is put out of band.
################################################################################

locals {
  secrets = {
    cdn_secret    = { name = "cdn-secret", description = "edgerec CDN shared secret (X-Edgerec-CDN-Secret), comma-separated accepted values, the first is sent." }
    pseudonym_key = { name = "pseudonym-key", description = "edgerec edge pseudonym key (EDGEREC_PSEUDONYM_KEY): keyed hash of shopper ids in feedback events." }
  }
}

resource "aws_secretsmanager_secret" "this" {
  #checkov:skip=CKV2_AWS_57:The CDN secret's value is owned by Terraform (CloudFront and the ALB rules need it) and rotates by the two-value procedure in infra/terraform/README.md; rotating the pseudonym key changes every shopper's pseudonym (past events stop matching erasure requests), a planned operation there. Neither is a rotation Lambda's.
  for_each = local.secrets

  name                    = "${var.name}/${each.value.name}"
  description             = each.value.description
  kms_key_id              = module.kms_key.arn
  recovery_window_in_days = var.secret_recovery_window_days

  dynamic "replica" {
    for_each = { for region, key in var.secret_replica_regions : region => key if region != local.region }

    content {
      region     = replica.key
      kms_key_id = replica.value
    }
  }

  tags = local.tags
}

resource "aws_secretsmanager_secret_version" "cdn_secret" {
  secret_id     = aws_secretsmanager_secret.this["cdn_secret"].id
  secret_string = join(",", var.cdn_secret_header_values)
}

################################################################################
# WAFv2 web ACL: rate limit per IP and AWS managed rules
################################################################################

resource "aws_wafv2_web_acl" "this" {
  name        = "${var.name}-cdn"
  description = "edgerec CDN: rate limit and AWS managed rules"
  scope       = "CLOUDFRONT"

  default_action {
    allow {}
  }

  rule {
    name     = "rate-limit-per-ip"
    priority = 0

    action {
      block {}
    }

    statement {
      rate_based_statement {
        limit              = var.rate_limit_per_5min
        aggregate_key_type = "IP"
      }
    }

    visibility_config {
      cloudwatch_metrics_enabled = true
      metric_name                = "${var.name}-rate-limit"
      sampled_requests_enabled   = true
    }
  }

  rule {
    name     = "aws-ip-reputation"
    priority = 1

    override_action {
      none {}
    }

    statement {
      managed_rule_group_statement {
        vendor_name = "AWS"
        name        = "AWSManagedRulesAmazonIpReputationList"
      }
    }

    visibility_config {
      cloudwatch_metrics_enabled = true
      metric_name                = "${var.name}-ip-reputation"
      sampled_requests_enabled   = true
    }
  }

  rule {
    name     = "aws-common"
    priority = 2

    override_action {
      none {}
    }

    statement {
      managed_rule_group_statement {
        vendor_name = "AWS"
        name        = "AWSManagedRulesCommonRuleSet"
      }
    }

    visibility_config {
      cloudwatch_metrics_enabled = true
      metric_name                = "${var.name}-common"
      sampled_requests_enabled   = true
    }
  }

  # Hosting-provider ranges (scrapers, bots) are blocked; anonymising services are only
  # counted, because shoppers use VPNs and private relays.
  rule {
    name     = "aws-anonymous-ip"
    priority = 4

    override_action {
      none {}
    }

    statement {
      managed_rule_group_statement {
        vendor_name = "AWS"
        name        = "AWSManagedRulesAnonymousIpList"

        rule_action_override {
          name = "AnonymousIPList"

          action_to_use {
            count {}
          }
        }
      }
    }

    visibility_config {
      cloudwatch_metrics_enabled = true
      metric_name                = "${var.name}-anonymous-ip"
      sampled_requests_enabled   = true
    }
  }

  # Includes the Log4JRCE rules.
  rule {
    name     = "aws-known-bad-inputs"
    priority = 3

    override_action {
      none {}
    }

    statement {
      managed_rule_group_statement {
        vendor_name = "AWS"
        name        = "AWSManagedRulesKnownBadInputsRuleSet"
      }
    }

    visibility_config {
      cloudwatch_metrics_enabled = true
      metric_name                = "${var.name}-known-bad-inputs"
      sampled_requests_enabled   = true
    }
  }

  visibility_config {
    cloudwatch_metrics_enabled = true
    metric_name                = "${var.name}-cdn"
    sampled_requests_enabled   = true
  }

  tags = local.tags
}

resource "aws_cloudwatch_log_group" "waf" {
  # WAF requires the aws-waf-logs- prefix.
  name              = "aws-waf-logs-${var.name}"
  retention_in_days = var.log_retention_days
  kms_key_id        = module.kms_key.arn

  tags = local.tags
}

resource "aws_wafv2_web_acl_logging_configuration" "this" {
  resource_arn            = aws_wafv2_web_acl.this.arn
  log_destination_configs = [aws_cloudwatch_log_group.waf.arn]

  redacted_fields {
    single_header {
      name = "authorization"
    }
  }

  redacted_fields {
    single_header {
      name = "cookie"
    }
  }
}

################################################################################
# Policies: cache on the edge's Cache-Control, forward the geo header
################################################################################

# min/default TTL 0: CloudFront caches only what the edge marks cacheable with
# Cache-Control, for at most max_ttl. The anonymous GET /v1/recommendations says
# "public, max-age=0, s-maxage=30, stale-while-revalidate=60" (CloudFront honours
# s-maxage and stale-while-revalidate); personal POST answers say "private,
# no-store", and CloudFront never caches POST anyway (cached_methods GET/HEAD).
resource "aws_cloudfront_cache_policy" "this" {
  name        = "${var.name}-honour-origin"
  comment     = "edgerec: honour the edge's Cache-Control; key on viewer country and the recommendation query"
  min_ttl     = 0
  default_ttl = 0
  max_ttl     = var.max_ttl_seconds

  parameters_in_cache_key_and_forwarded_to_origin {
    enable_accept_encoding_gzip   = true
    enable_accept_encoding_brotli = true

    cookies_config {
      cookie_behavior = "none"
    }

    # Answers differ by market (the edge picks it from the geo header when ?region= is absent and then
    # answers Vary: CloudFront-Viewer-Country), so the country is part of the cache key.
    headers_config {
      header_behavior = "whitelist"

      headers {
        items = local.geo_headers
      }
    }

    # In the cache key, hence forwarded to the edges.
    query_strings_config {
      query_string_behavior = "whitelist"

      query_strings {
        items = local.recommendation_query_strings
      }
    }
  }
}

# What reaches the edges beyond the cache key: Content-Type (POST bodies). The query strings
# forwarded are exactly the cache key's (none added here), so no answer is cached under a key
# that lacks an input it was computed from.
resource "aws_cloudfront_origin_request_policy" "this" {
  name    = "${var.name}-geo"
  comment = "edgerec: forward the viewer-country geo header and Content-Type to the edges"

  cookies_config {
    cookie_behavior = "none"
  }

  headers_config {
    header_behavior = "whitelist"

    headers {
      items = concat(local.geo_headers, ["Content-Type"])
    }
  }

  query_strings_config {
    query_string_behavior = "none"
  }
}

resource "aws_cloudfront_response_headers_policy" "this" {
  name    = "${var.name}-security"
  comment = "edgerec: security headers"

  security_headers_config {
    strict_transport_security {
      access_control_max_age_sec = 31536000
      include_subdomains         = true
      preload                    = true
      override                   = true
    }

    content_type_options {
      override = true
    }

    frame_options {
      frame_option = "DENY"
      override     = true
    }

    referrer_policy {
      referrer_policy = "strict-origin-when-cross-origin"
      override        = true
    }
  }
}

################################################################################
# Distribution
################################################################################

resource "aws_cloudfront_distribution" "this" {
  #checkov:skip=CKV_AWS_310:Regional failover happens in DNS: the origin is a Route 53 latency record whose per-region aliases evaluate ALB target health, so a failed region drops out. CloudFront origin groups only fail over GET/HEAD, not the POST recommendation API.
  #checkov:skip=CKV_AWS_374:A shop serves shoppers worldwide; which markets a region serves is decided by the edges from the geo header, not by blocking countries at the CDN.
  #checkov:skip=CKV_AWS_305:An API distribution has no root document; / is not served.
  enabled         = true
  is_ipv6_enabled = true
  http_version    = "http2and3"
  comment         = "${var.name}: shoppers to the nearest edge region"
  aliases         = var.aliases
  price_class     = var.price_class
  web_acl_id      = aws_wafv2_web_acl.this.arn

  origin {
    origin_id   = local.origin_id
    domain_name = var.edge_domain_name

    custom_origin_config {
      http_port                = 80
      https_port               = 443
      origin_protocol_policy   = "https-only"
      origin_ssl_protocols     = ["TLSv1.2"]
      origin_keepalive_timeout = 60
      origin_read_timeout      = 10
    }

    custom_header {
      name  = local.cdn_secret_header
      value = var.cdn_secret_header_values[0]
    }
  }

  # Everything but the recommendation API: read-only (/openapi.json, /healthz, ...).
  default_cache_behavior {
    target_origin_id           = local.origin_id
    viewer_protocol_policy     = "redirect-to-https"
    allowed_methods            = ["GET", "HEAD", "OPTIONS"]
    cached_methods             = ["GET", "HEAD"]
    compress                   = true
    cache_policy_id            = aws_cloudfront_cache_policy.this.id
    origin_request_policy_id   = aws_cloudfront_origin_request_policy.this.id
    response_headers_policy_id = aws_cloudfront_response_headers_policy.this.id
  }

  # The recommendation API: POST (personal, "private, no-store", never cached: CloudFront caches only
  # GET/HEAD) and the anonymous GET, cached per (viewer country, region, k, slot, device) for as long
  # as the edge's s-maxage says. Model blobs (/v1/sync/blobs/*) are not behind this distribution: they
  # are served by the origin, which edges reach over private networking with their region token.
  ordered_cache_behavior {
    path_pattern               = "/v1/recommendations"
    target_origin_id           = local.origin_id
    viewer_protocol_policy     = "https-only"
    allowed_methods            = ["GET", "HEAD", "OPTIONS", "PUT", "POST", "PATCH", "DELETE"]
    cached_methods             = ["GET", "HEAD"]
    compress                   = true
    cache_policy_id            = aws_cloudfront_cache_policy.this.id
    origin_request_policy_id   = aws_cloudfront_origin_request_policy.this.id
    response_headers_policy_id = aws_cloudfront_response_headers_policy.this.id
  }

  # Operational endpoints are not for shoppers.
  ordered_cache_behavior {
    path_pattern               = "/metrics"
    target_origin_id           = local.origin_id
    viewer_protocol_policy     = "https-only"
    allowed_methods            = ["GET", "HEAD"]
    cached_methods             = ["GET", "HEAD"]
    cache_policy_id            = aws_cloudfront_cache_policy.this.id
    origin_request_policy_id   = aws_cloudfront_origin_request_policy.this.id
    response_headers_policy_id = aws_cloudfront_response_headers_policy.this.id
    function_association {
      event_type   = "viewer-request"
      function_arn = aws_cloudfront_function.deny.arn
    }
  }

  restrictions {
    geo_restriction {
      restriction_type = "none"
    }
  }

  viewer_certificate {
    acm_certificate_arn      = var.acm_certificate_arn
    ssl_support_method       = "sni-only"
    minimum_protocol_version = "TLSv1.2_2021"
  }

  logging_config {
    bucket          = var.logging_bucket_domain_name
    prefix          = "cloudfront/${var.name}/"
    include_cookies = false
  }

  tags = local.tags
}

resource "aws_cloudfront_function" "deny" {
  name    = "${var.name}-deny"
  runtime = "cloudfront-js-2.0"
  comment = "edgerec: 404 for operational paths"
  publish = true
  code    = "function handler(event) { return { statusCode: 404, statusDescription: 'Not Found' }; }"
}
