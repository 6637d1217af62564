# The variables every module of a deployment takes alike (cdn, origin, edge_region, service), written once: each
# module's deployment_variables.tf is a link to this file. The origin and the edge regions pass them on to
# modules/service, which checks them again at no cost.

variable "name" {
  description = "Name of the deployment (e.g. \"edgerec-prod\"): the prefix of every resource name, with the component (and an edge region's region) appended where names must be unique; the log groups are /edgerec/<name>/<component>."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,30}[a-z0-9]$", var.name))
    error_message = "name must be 3-32 characters of lowercase letters, digits and hyphens, starting with a letter."
  }
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}

variable "log_retention_days" {
  description = "CloudWatch Logs retention (days) of the module's logs: the containers' (origin, edge region) or the WAF's (cdn)."
  type        = number
  default     = 365

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.log_retention_days)
    error_message = "log_retention_days must be a value CloudWatch Logs accepts."
  }
}
