# Where the resources of the origin's layout before modules/service now live: applying the refactor moves them in state
# instead of destroying and re-creating them (the moves into modules/service that origin and edge_region share are
# in moved_to_service.tf, a link to ../../shared/moved_to_service.tf). Keep these blocks until every deployment has
# applied once.

moved {
  from = aws_vpc_security_group_ingress_rule.alb_https
  to   = module.service.aws_vpc_security_group_ingress_rule.alb_https
}

moved {
  from = aws_lb_trust_store.clients
  to   = module.service.aws_lb_trust_store.clients
}

moved {
  from = aws_secretsmanager_secret.admin_token
  to   = aws_secretsmanager_secret.this["admin_token"]
}

moved {
  from = aws_secretsmanager_secret.sync_token
  to   = aws_secretsmanager_secret.this["sync_token"]
}

moved {
  from = aws_secretsmanager_secret.region_tokens
  to   = aws_secretsmanager_secret.this["region_tokens"]
}

moved {
  from = aws_secretsmanager_secret.signing_key
  to   = aws_secretsmanager_secret.this["signing_key"]
}

moved {
  from = aws_secretsmanager_secret.this
  to   = module.service.aws_secretsmanager_secret.this
}
