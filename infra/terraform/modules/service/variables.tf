# The validations of what the origin and the edge regions pass through live here, once (name, tags and
# log_retention_days: deployment_variables.tf, a link to ../../shared/deployment_variables.tf).

variable "component" {
  description = "What runs here, in names and descriptions: \"origin\" or \"edge\"."
  type        = string

  validation {
    condition     = contains(["origin", "edge"], var.component)
    error_message = "component must be origin or edge."
  }
}

variable "prefix" {
  description = "Name (prefix) of the cluster, service, task family, KMS alias and security groups, unique per account and region (e.g. \"edgerec-prod-origin\")."
  type        = string
}

variable "iam_name_prefix" {
  description = "Prefix of the IAM role names (global, at most 38 characters with \"-exec-\"), e.g. \"edgerec-prod-edge\"."
  type        = string
}

variable "kms_key_description" {
  description = "What the service's KMS key encrypts (logs, the injected secrets, anything the caller adds)."
  type        = string
}

# --- network and front door ---------------------------------------------------------------------------

variable "network" {
  description = "Where the service runs: the VPC, the subnets of the load balancer and the (private) subnets of the Fargate tasks, each at least two availability zones."
  type = object({
    vpc_id          = string
    alb_subnet_ids  = list(string)
    task_subnet_ids = list(string)
  })

  validation {
    condition     = can(regex("^vpc-[0-9a-f]+$", var.network.vpc_id))
    error_message = "network.vpc_id must look like vpc-0123abcd."
  }

  validation {
    condition     = length(var.network.alb_subnet_ids) >= 2 && length(var.network.task_subnet_ids) >= 2
    error_message = "Give at least two subnets for the load balancer and two private subnets for the tasks, in different availability zones."
  }
}

variable "internal" {
  description = "Whether the load balancer is internal."
  type        = bool
}

variable "alb_name_prefix" {
  description = "name_prefix of the load balancer, target group and trust store (at most 6 characters)."
  type        = string
}

variable "alb_description" {
  description = "Description of the load balancer's security group (who may reach it)."
  type        = string
}

variable "alb_ingress" {
  description = "Who may open HTTPS to the load balancer: one entry a rule, with a CIDR block or a managed prefix list."
  type = map(object({
    description    = string
    cidr_ipv4      = optional(string)
    prefix_list_id = optional(string)
  }))

  validation {
    condition     = length(var.alb_ingress) > 0 && alltrue([for r in values(var.alb_ingress) : (r.cidr_ipv4 == null) != (r.prefix_list_id == null)])
    error_message = "alb_ingress needs at least one rule, each with exactly one of cidr_ipv4 and prefix_list_id."
  }
}

variable "idle_timeout" {
  description = "Idle timeout of the load balancer (seconds)."
  type        = number
  default     = 60
}

variable "alb_access_logs_bucket" {
  description = "Existing bucket (with the ELB log delivery policy) receiving the load balancer's access logs."
  type        = string
}

variable "deletion_protection" {
  description = "Deletion protection for the load balancer."
  type        = bool
  default     = true
}

variable "certificate_arn" {
  description = "ACM certificate served by the HTTPS listener."
  type        = string

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:acm:", var.certificate_arn))
    error_message = "certificate_arn must be an ACM certificate ARN."
  }
}

variable "required_header_name" {
  description = "A header every forwarded request must carry with one of required_header_values; anything else gets 403. null = forward everything."
  type        = string
  default     = null
}

variable "required_header_values" {
  description = "Accepted values of required_header_name."
  type        = list(string)
  default     = []
  sensitive   = true
}

variable "client_ca_bundle_s3" {
  description = "Optional mutual TLS at the listener (null = off): the S3 object (bucket, key) of the PEM CA bundle that client certificates must chain to (an ALB trust store, mode verify)."
  type = object({
    bucket = string
    key    = string
  })
  default = null
}

variable "target_protocol" {
  description = "Protocol of the ALB -> task hop and of its health check: HTTP or HTTPS."
  type        = string

  validation {
    condition     = contains(["HTTP", "HTTPS"], var.target_protocol)
    error_message = "target_protocol must be HTTP or HTTPS."
  }
}

variable "health_check_path" {
  description = "Path the target group checks; a task gets traffic only while it answers 200."
  type        = string
}

variable "health_check_interval" {
  description = "Seconds between two target health checks."
  type        = number
}

variable "tasks_https_description" {
  description = "Description of the tasks' HTTPS egress rule (what they call)."
  type        = string
}

# --- task ------------------------------------------------------------------------------------------------

variable "image" {
  description = "Container image of every container of the task, pinned by digest or immutable tag."
  type        = string

  validation {
    condition     = !endswith(var.image, ":latest")
    error_message = "Pin the image by digest or an immutable tag, not :latest."
  }
}

variable "containers" {
  description = "ECS container definitions (name, essential, command, portMappings, environment, secrets, dependsOn, healthCheck, ...): image, non-root user, read-only root file system, the data and /tmp mounts, init process and logging are added here."
  type        = any
}

variable "container_name" {
  description = "The container that the load balancer sends traffic to (its logs stream under <component>/)."
  type        = string
}

variable "container_port" {
  description = "Port the container_name container listens on."
  type        = number
}

variable "data_dir" {
  description = "Where every container mounts the task's writable data volume (Fargate ephemeral storage)."
  type        = string
  default     = "/var/lib/edgerec"
}

variable "task" {
  description = "Fargate task size: cpu units, memory (MiB), the cpu_architecture the image is built for, and ephemeral_storage_gib (GiB) of a task, which backs the data volume. The origin and the edge regions pass theirs through; an attribute left out (or null) takes its default here."
  type = object({
    cpu                   = optional(number, 1024)
    memory                = optional(number, 2048)
    cpu_architecture      = optional(string, "X86_64")
    ephemeral_storage_gib = optional(number, 30)
  })
  default  = {}
  nullable = false

  validation {
    condition     = contains([256, 512, 1024, 2048, 4096, 8192, 16384], var.task.cpu)
    error_message = "cpu must be a Fargate CPU size."
  }

  validation {
    condition     = contains(["X86_64", "ARM64"], var.task.cpu_architecture)
    error_message = "cpu_architecture must be X86_64 or ARM64."
  }

  validation {
    condition     = var.task.ephemeral_storage_gib >= 21 && var.task.ephemeral_storage_gib <= 200
    error_message = "ephemeral_storage_gib must be between 21 and 200."
  }
}

variable "secrets" {
  description = "Secrets Manager secrets of the caller that this module creates, by key: the name below <name>/ and a description. On the service's KMS key, containers only (the values are put out of band); the execution role may read them (output secret_arns)."
  type = map(object({
    name        = string
    description = string
  }))
  default = {}
}

variable "secret_arns" {
  description = "Other Secrets Manager secrets the execution role may read (those the containers inject, JSON-key suffixes removed), besides the ones of var.secrets."
  type        = list(string)
  default     = []
}

variable "secrets_kms_key_arns" {
  description = "KMS keys, besides this module's own, that encrypt injected secrets."
  type        = list(string)
  default     = []
}

# --- capacity -------------------------------------------------------------------------------------------

variable "min_capacity" {
  description = "Fewest tasks (and the count a new service starts with)."
  type        = number
}

variable "max_capacity" {
  description = "Most tasks; equal to min_capacity pins the count."
  type        = number
}

variable "cpu_target_percent" {
  description = "Target average CPU utilisation for autoscaling; null = no CPU policy."
  type        = number
  default     = null
}

variable "requests_per_target" {
  description = "Target ALB requests per task (per minute) for autoscaling; null = no request policy."
  type        = number
  default     = null
}
