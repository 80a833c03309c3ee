# One KMS-encrypted CloudWatch log group per service (Fluent Bit / the CloudWatch agent ship container logs there).
terraform {
  required_providers {
    aws = { source = "hashicorp/aws", version = "~> 5.100" }
  }
}

variable "name_prefix" {
  description = "Log group path prefix, e.g. /cta/prod"
  type        = string
}

variable "services" {
  type = set(string)
}

variable "retention_in_days" {
  type    = number
  default = 365
}

variable "kms_key_arn" {
  type = string
}

resource "aws_cloudwatch_log_group" "this" {
  for_each          = var.services
  name              = "${var.name_prefix}/${each.key}"
  retention_in_days = var.retention_in_days
  kms_key_id        = var.kms_key_arn
}

output "log_group_names" {
  value = { for k, g in aws_cloudwatch_log_group.this : k => g.name }
}

output "log_group_arns" {
  value = { for k, g in aws_cloudwatch_log_group.this : k => g.arn }
}

output "retention_in_days" {
  value = { for k, g in aws_cloudwatch_log_group.this : k => g.retention_in_days }
}
