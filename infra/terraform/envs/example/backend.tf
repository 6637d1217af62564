terraform {
  # Remote state, encrypted, with locking. Fill in per account (terraform init -backend-config=...).
  backend "s3" {}
}
