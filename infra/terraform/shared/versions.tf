# The Terraform and provider pins of every module and of envs/example: each one's versions.tf is a link to this
# file, so that a bump is one change. (envs/example keeps its state backend in backend.tf.)
terraform {
  required_version = ">= 1.5.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.60.0, < 7.0.0"
    }
  }
}
