terraform {
  required_version = ">= 1.5.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.60.0, < 7.0.0"
    }
  }

  # Remote state, encrypted, with locking. Fill in per account (terraform init -backend-config=...).
  backend "s3" {}
}
