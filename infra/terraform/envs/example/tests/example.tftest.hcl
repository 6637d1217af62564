# `terraform test` of envs/example without AWS: every provider is mocked, so this plans the whole deployment
# (origin, CDN, three edge regions, all through modules/service and modules/kms_key) offline and checks what the
# operators' procedures rely on. tests/infra runs it wherever the hashicorp/aws provider can be installed.

# One mock a provider alias, on the shared defaults of tests/aws_mocks; each answers as its own region.
mock_provider "aws" {
  source = "./tests/aws_mocks"

  mock_data "aws_region" {
    defaults = { name = "eu-west-1" }
  }
}

mock_provider "aws" {
  alias  = "eu_west_1"
  source = "./tests/aws_mocks"

  mock_data "aws_region" {
    defaults = { name = "eu-west-1" }
  }
}

mock_provider "aws" {
  alias  = "eu_central_1"
  source = "./tests/aws_mocks"

  mock_data "aws_region" {
    defaults = { name = "eu-central-1" }
  }
}

mock_provider "aws" {
  alias  = "us_east_1"
  source = "./tests/aws_mocks"

  mock_data "aws_region" {
    defaults = { name = "us-east-1" }
  }
}

variables {
  environment              = "prod"
  domain_name              = "shop.example.com"
  route53_zone_id          = "Z0123456789EXAMPLE"
  edge_image               = "111122223333.dkr.ecr.eu-west-1.amazonaws.com/edgerec-edge@sha256:0000000000000000000000000000000000000000000000000000000000000000"
  origin_image             = "111122223333.dkr.ecr.eu-west-1.amazonaws.com/edgerec-origin@sha256:0000000000000000000000000000000000000000000000000000000000000000"
  origin_public_keys       = ["MCowBQYDK2VwAyEAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="]
  cdn_secret_header_values = ["0123456789abcdef0123456789abcdef"]
  certificates = {
    cloudfront     = "arn:aws:acm:us-east-1:111122223333:certificate/cloudfront-example"
    origin         = "arn:aws:acm:eu-west-1:111122223333:certificate/origin-example"
    "eu-west-1"    = "arn:aws:acm:eu-west-1:111122223333:certificate/edges-example"
    "eu-central-1" = "arn:aws:acm:eu-central-1:111122223333:certificate/edges-example"
    "us-east-1"    = "arn:aws:acm:us-east-1:111122223333:certificate/edges-example"
  }
  networks = {
    "eu-west-1" = {
      vpc_id              = "vpc-0aaaaaaaaaaaaaaaa"
      vpc_cidr            = "10.10.0.0/16"
      public_subnet_ids   = ["subnet-0a1", "subnet-0a2"]
      private_subnet_ids  = ["subnet-0a3", "subnet-0a4"]
      database_subnet_ids = ["subnet-0a5", "subnet-0a6"]
    }
    "eu-central-1" = {
      vpc_id             = "vpc-0bbbbbbbbbbbbbbbb"
      vpc_cidr           = "10.20.0.0/16"
      public_subnet_ids  = ["subnet-0b1", "subnet-0b2"]
      private_subnet_ids = ["subnet-0b3", "subnet-0b4"]
    }
    "us-east-1" = {
      vpc_id             = "vpc-0cccccccccccccccc"
      vpc_cidr           = "10.30.0.0/16"
      public_subnet_ids  = ["subnet-0c1", "subnet-0c2"]
      private_subnet_ids = ["subnet-0c3", "subnet-0c4"]
    }
  }
  log_buckets = {
    "eu-west-1"    = "acme-logs-eu-west-1"
    "eu-central-1" = "acme-logs-eu-central-1"
    "us-east-1"    = "acme-logs-us-east-1"
    cloudfront     = "acme-cloudfront-logs.s3.eu-west-1.amazonaws.com"
  }
}

run "the_example_plans_with_every_service_named_as_the_runbooks_say" {
  command = plan

  assert {
    condition     = output.origin_service.service == "edgerec-prod-origin"
    error_message = "the origin's ECS service is not edgerec-prod-origin"
  }

  assert {
    condition     = output.edge_regions["eu-central-1"].service == "edgerec-prod-edge-eu-central-1" && join(",", output.edge_regions["us-east-1"].markets) == "US,CA"
    error_message = "an edge region's service name or markets are off"
  }

  assert {
    condition     = output.edge_regions["eu-west-1"].sync_token_secret.name == "edgerec-prod/sync-token-eu-west-1"
    error_message = "an edge region's sync-token secret is not <name>/sync-token-<region>"
  }

  assert {
    condition     = output.origin_url == "https://origin.shop.example.com" && output.shopper_url == "https://reco.shop.example.com"
    error_message = "the origin or shopper URL is off"
  }
}
