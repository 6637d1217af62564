# Where the resources of the edge region's layout before modules/service now live: applying the refactor moves them in state
# instead of destroying and re-creating them (the moves into modules/service that origin and edge_region share are
# in moved_to_service.tf, a link to ../../shared/moved_to_service.tf). Keep these blocks until every deployment has
# applied once.

moved {
  from = aws_vpc_security_group_ingress_rule.alb_https_from_cloudfront
  to   = module.service.aws_vpc_security_group_ingress_rule.alb_https["cloudfront"]
}

moved {
  from = aws_lb_listener_rule.from_cdn
  to   = module.service.aws_lb_listener_rule.required_header[0]
}

moved {
  from = aws_appautoscaling_target.this
  to   = module.service.aws_appautoscaling_target.this
}

moved {
  from = aws_appautoscaling_policy.cpu
  to   = module.service.aws_appautoscaling_policy.this["cpu"]
}

moved {
  from = aws_appautoscaling_policy.requests
  to   = module.service.aws_appautoscaling_policy.this["requests"]
}

moved {
  from = aws_secretsmanager_secret.sync_token
  to   = module.service.aws_secretsmanager_secret.this["sync_token"]
}
