variable "environment" {
  description = "dev or prod: picks the sizes and the protection settings (see locals in main.tf)"
  type        = string

  validation {
    condition     = contains(["dev", "prod"], var.environment)
    error_message = "environment must be \"dev\" or \"prod\"."
  }
}

variable "region" {
  description = "AWS region"
  type        = string
  default     = "eu-central-1"
}

variable "name_prefix" {
  description = "Prefix of every resource name (lowercase letters, digits, hyphens)"
  type        = string
  default     = "cta"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,14}$", var.name_prefix))
    error_message = "name_prefix must be 2-15 lowercase letters, digits or hyphens, starting with a letter."
  }
}

variable "tags" {
  description = "Extra tags on every resource (merged into the provider's default_tags)"
  type        = map(string)
  default     = {}
}

variable "availability_zones" {
  description = "Zones for the subnets; null: <region>a, b (dev) or a, b, c (prod)"
  type        = list(string)
  default     = null
}

variable "vpc_cidr" {
  type    = string
  default = "10.40.0.0/16"
}

variable "kubernetes_version" {
  type    = string
  default = "1.32"
}

variable "kubernetes_namespace" {
  description = "Namespace of CTA's service accounts (the IRSA trust policies name it)"
  type        = string
  default     = "cta"
}

variable "eks_public_access_cidrs" {
  description = "CIDRs allowed to the EKS public endpoint in dev (prod has no public endpoint)"
  type        = list(string)
  default     = ["10.0.0.0/8"]
}

# Size overrides: null takes the environment's default from local.sizes.
variable "rds_instance_class" {
  type    = string
  default = null
}

variable "redis_node_type" {
  type    = string
  default = null
}

variable "eks_node_instance_types" {
  type    = list(string)
  default = null
}

variable "eks_node_min_size" {
  type    = number
  default = null
}

variable "eks_node_desired_size" {
  type    = number
  default = null
}

variable "eks_node_max_size" {
  type    = number
  default = null
}
