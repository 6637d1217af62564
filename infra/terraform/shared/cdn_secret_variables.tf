# The CDN shared secret, which the cdn module sends and every edge_region module requires, written once: both
# modules' cdn_secret_variables.tf is a link to this file.

variable "cdn_secret_header_values" {
  description = "CDN shared-secret values (one; two during a rotation, new first). CloudFront sends the first as X-Edgerec-CDN-Secret on every origin request (the cdn module also stores them in Secrets Manager for the edge containers); an edge region's listener forwards only requests carrying one of them."
  type        = list(string)
  sensitive   = true

  validation {
    condition     = length(var.cdn_secret_header_values) >= 1 && length(var.cdn_secret_header_values) <= 2 && alltrue([for v in var.cdn_secret_header_values : length(v) >= 32 && !strcontains(v, ",")])
    error_message = "Give one or two CDN secret values of at least 32 characters, without commas."
  }
}
