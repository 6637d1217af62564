locals {
  default_tags = merge(var.tags, {
    "edgerec:environment" = var.environment
    "managed-by"          = "terraform"
  })
}

# The origin's region.
provider "aws" {
  region = var.origin_region

  default_tags {
    tags = local.default_tags
  }
}

provider "aws" {
  alias  = "eu_west_1"
  region = "eu-west-1"

  default_tags {
    tags = local.default_tags
  }
}

provider "aws" {
  alias  = "eu_central_1"
  region = "eu-central-1"

  default_tags {
    tags = local.default_tags
  }
}

# Also CloudFront's and its WAF's control-plane region.
provider "aws" {
  alias  = "us_east_1"
  region = "us-east-1"

  default_tags {
    tags = local.default_tags
  }
}
