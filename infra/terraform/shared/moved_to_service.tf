# The moves of every resource that lived in a caller of modules/service (modules/origin, modules/edge_region) before
# that module existed: applying the refactor moves them in state instead of destroying and re-creating them. Both
# callers had the same resources under the same names, so the list is written once: each caller's
# moved_to_service.tf is a link to this file (a moved block must stand in the module whose addresses it names).
# Each caller's moved.tf holds the moves of its own. Keep these blocks until every deployment has applied once.

moved {
  from = aws_kms_key.this
  to   = module.service.module.kms_key.aws_kms_key.this
}

moved {
  from = aws_kms_alias.this
  to   = module.service.module.kms_key.aws_kms_alias.this
}

moved {
  from = aws_cloudwatch_log_group.this
  to   = module.service.aws_cloudwatch_log_group.this
}

moved {
  from = aws_security_group.alb
  to   = module.service.aws_security_group.alb
}

moved {
  from = aws_vpc_security_group_egress_rule.alb_to_tasks
  to   = module.service.aws_vpc_security_group_egress_rule.alb_to_tasks
}

moved {
  from = aws_security_group.tasks
  to   = module.service.aws_security_group.tasks
}

moved {
  from = aws_vpc_security_group_ingress_rule.tasks_from_alb
  to   = module.service.aws_vpc_security_group_ingress_rule.tasks_from_alb
}

moved {
  from = aws_vpc_security_group_egress_rule.tasks_https
  to   = module.service.aws_vpc_security_group_egress_rule.tasks_https
}

moved {
  from = aws_lb.this
  to   = module.service.aws_lb.this
}

moved {
  from = aws_lb_target_group.this
  to   = module.service.aws_lb_target_group.this
}

moved {
  from = aws_lb_listener.https
  to   = module.service.aws_lb_listener.https
}

moved {
  from = aws_ecs_cluster.this
  to   = module.service.aws_ecs_cluster.this
}

moved {
  from = aws_iam_role.execution
  to   = module.service.aws_iam_role.execution
}

moved {
  from = aws_iam_role_policy_attachment.execution
  to   = module.service.aws_iam_role_policy_attachment.execution
}

moved {
  from = aws_iam_role_policy.execution_secrets
  to   = module.service.aws_iam_role_policy.execution_secrets
}

moved {
  from = aws_iam_role.task
  to   = module.service.aws_iam_role.task
}

moved {
  from = aws_ecs_task_definition.this
  to   = module.service.aws_ecs_task_definition.this
}

moved {
  from = aws_ecs_service.this
  to   = module.service.aws_ecs_service.this
}
