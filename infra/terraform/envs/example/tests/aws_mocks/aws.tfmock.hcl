# What every mocked AWS provider of example.tftest.hcl answers for the data sources the modules read: an
# account, the aws partition, and policy documents that are JSON (IAM roles refuse anything else).
mock_data "aws_caller_identity" {
  defaults = { account_id = "111122223333" }
}

mock_data "aws_partition" {
  defaults = { partition = "aws" }
}

mock_data "aws_iam_policy_document" {
  defaults = { json = "{\"Version\":\"2012-10-17\",\"Statement\":[]}" }
}
