# IAM roles for Kubernetes service accounts (IRSA): each role trusts exactly one namespace/service account through
# the cluster's OIDC provider and carries only the statements its service needs.
terraform {
  required_providers {
    aws = { source = "hashicorp/aws", version = "~> 5.100" }
  }
}

variable "name_prefix" {
  type = string
}

variable "oidc_provider_arn" {
  type = string
}

variable "oidc_issuer" {
  description = "Issuer URL of the cluster (https://oidc.eks...); the scheme is stripped for the condition keys"
  type        = string
}

variable "roles" {
  description = "Service => { namespace, service_account, statements (IAM policy statements) }"
  type = map(object({
    namespace       = string
    service_account = string
    statements = list(object({
      sid       = string
      actions   = list(string)
      resources = list(string)
    }))
  }))
}

locals {
  issuer = replace(var.oidc_issuer, "https://", "")
}

resource "aws_iam_role" "this" {
  for_each = var.roles
  name     = "${var.name_prefix}-${replace(each.key, "_", "-")}"
  assume_role_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Principal = { Federated = var.oidc_provider_arn }
      Action    = "sts:AssumeRoleWithWebIdentity"
      Condition = {
        StringEquals = {
          "${local.issuer}:sub" = "system:serviceaccount:${each.value.namespace}:${each.value.service_account}"
          "${local.issuer}:aud" = "sts.amazonaws.com"
        }
      }
    }]
  })
}

resource "aws_iam_role_policy" "this" {
  for_each = { for k, v in var.roles : k => v if length(v.statements) > 0 }
  name     = "least-privilege"
  role     = aws_iam_role.this[each.key].id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [for s in each.value.statements : {
      Sid      = s.sid
      Effect   = "Allow"
      Action   = s.actions
      Resource = s.resources
    }]
  })
}

output "role_arns" {
  value = { for k, r in aws_iam_role.this : k => r.arn }
}

output "role_names" {
  value = { for k, r in aws_iam_role.this : k => r.name }
}
