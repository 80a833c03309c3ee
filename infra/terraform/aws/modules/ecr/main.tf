# Private image repositories: immutable tags, scan on push, KMS encryption, and a lifecycle policy that keeps
# the newest images only.
terraform {
  required_providers {
    aws = { source = "hashicorp/aws", version = "~> 5.100" }
  }
}

variable "name_prefix" {
  type = string
}

variable "repositories" {
  description = "Repository short names (one per image target)"
  type        = set(string)
}

variable "kms_key_arn" {
  type = string
}

variable "keep_images" {
  type    = number
  default = 50
}

variable "force_delete" {
  description = "Allow destroying repositories that still hold images (dev only)"
  type        = bool
  default     = false
}

resource "aws_ecr_repository" "this" {
  for_each             = var.repositories
  name                 = "${var.name_prefix}/${each.key}"
  image_tag_mutability = "IMMUTABLE"
  force_delete         = var.force_delete

  image_scanning_configuration {
    scan_on_push = true
  }

  encryption_configuration {
    encryption_type = "KMS"
    kms_key         = var.kms_key_arn
  }
}

resource "aws_ecr_lifecycle_policy" "this" {
  for_each   = aws_ecr_repository.this
  repository = each.value.name
  policy = jsonencode({
    rules = [{
      rulePriority = 1
      description  = "keep the newest ${var.keep_images} images"
      selection = {
        tagStatus   = "any"
        countType   = "imageCountMoreThan"
        countNumber = var.keep_images
      }
      action = { type = "expire" }
    }]
  })
}

output "repository_urls" {
  value = { for k, r in aws_ecr_repository.this : k => r.repository_url }
}

output "repository_arns" {
  value = { for k, r in aws_ecr_repository.this : k => r.arn }
}

output "settings" {
  description = "Repository => effective settings (read by the terraform tests)"
  value = {
    for k, r in aws_ecr_repository.this : k => {
      name            = r.name
      tag_mutability  = r.image_tag_mutability
      scan_on_push    = one(r.image_scanning_configuration).scan_on_push
      encryption_type = one(r.encryption_configuration).encryption_type
      force_delete    = r.force_delete
    }
  }
}
