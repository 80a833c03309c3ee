variable "region" {
  description = "AWS region"
  type        = string
  default     = "eu-central-1"
}

variable "environment" {
  description = "Environment name (prod, staging, ...)"
  type        = string
  default     = "prod"
}

variable "name_prefix" {
  description = "Prefix of every resource name"
  type        = string
  default     = "cta"
}
