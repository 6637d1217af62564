# The setting of every module that creates Secrets Manager secrets (cdn, origin, edge_region), written once: each
# one's secret_variables.tf is a link to this file.

variable "secret_recovery_window_days" {
  description = "Days a deleted secret of this module stays recoverable."
  type        = number
  default     = 7

  validation {
    condition     = var.secret_recovery_window_days >= 7 && var.secret_recovery_window_days <= 30
    error_message = "secret_recovery_window_days must be between 7 and 30."
  }
}
