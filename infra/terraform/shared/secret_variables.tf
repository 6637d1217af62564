# The setting of every module with Secrets Manager secrets (cdn; service, which creates the origin's and an edge
# region's, and origin and edge_region, which pass it on), written once: each one's secret_variables.tf is a link to
# this file.

variable "secret_recovery_window_days" {
  description = "Days a deleted secret of this module stays recoverable."
  type        = number
  default     = 7

  validation {
    condition     = var.secret_recovery_window_days >= 7 && var.secret_recovery_window_days <= 30
    error_message = "secret_recovery_window_days must be between 7 and 30."
  }
}
