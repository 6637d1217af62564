variable "alias" {
  description = "Alias of the key, without the alias/ prefix (e.g. \"edgerec-prod-origin\")."
  type        = string
}

variable "description" {
  description = "What the key encrypts, for the console."
  type        = string
}

variable "log_group_pattern" {
  description = "Log group names (a wildcard pattern) in this account and region whose CloudWatch Logs data the key may encrypt, e.g. \"/edgerec/edgerec-prod/*\"."
  type        = string
}

variable "tags" {
  description = "Tags of the key."
  type        = map(string)
  default     = {}
}
