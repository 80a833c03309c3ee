# Secrets Manager secrets created EMPTY: terraform manages the container (name, KMS key, recovery window), never
# the value. Operators seed values out of band:
#   aws secretsmanager put-secret-value --secret-id <name> --secret-string file://value.json
# so no secret value is ever a terraform variable, in a plan, in tfstate or in an output.
terraform {
  required_providers {
    aws = { source = "hashicorp/aws", version = "~> 5.100" }
  }
}

variable "name_prefix" {
  description = "Path prefix of every secret name, e.g. cta/prod"
  type        = string
}

variable "secrets" {
  description = "Short name => description"
  type        = map(string)
}

variable "kms_key_arn" {
  type = string
}

variable "recovery_window_in_days" {
  description = "0 deletes immediately (dev); 7-30 keeps a deleted secret recoverable (prod)"
  type        = number
  default     = 30
}

resource "aws_secretsmanager_secret" "this" {
  #checkov:skip=CKV2_AWS_57:Exchange API keys and third-party API tokens are issued by the provider's console; Secrets Manager cannot rotate them (rotation is an operator runbook)
  for_each                = var.secrets
  name                    = "${var.name_prefix}/${each.key}"
  description             = each.value
  kms_key_id              = var.kms_key_arn
  recovery_window_in_days = var.recovery_window_in_days
}

output "arns" {
  description = "Short name => secret ARN (never the value)"
  value       = { for k, s in aws_secretsmanager_secret.this : k => s.arn }
}

output "names" {
  description = "Short name => secret name"
  value       = { for k, s in aws_secretsmanager_secret.this : k => s.name }
}

output "settings" {
  description = "Secret => effective settings (read by the terraform tests)"
  value = {
    for k, s in aws_secretsmanager_secret.this : k => {
      customer_managed_key    = s.kms_key_id == var.kms_key_arn
      recovery_window_in_days = s.recovery_window_in_days
    }
  }
}
