# Where the resources of the layout before modules/kms_key and for_each now live: applying the refactor moves them
# in state instead of destroying and re-creating them. Keep these blocks until every deployment has applied once.

moved {
  from = aws_kms_key.this
  to   = module.kms_key.aws_kms_key.this
}

moved {
  from = aws_kms_alias.this
  to   = module.kms_key.aws_kms_alias.this
}

moved {
  from = aws_secretsmanager_secret.cdn_secret
  to   = aws_secretsmanager_secret.this["cdn_secret"]
}

moved {
  from = aws_secretsmanager_secret.pseudonym_key
  to   = aws_secretsmanager_secret.this["pseudonym_key"]
}
