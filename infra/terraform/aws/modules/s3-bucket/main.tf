# A private bucket: versioned, SSE-KMS with a bucket key, every public access path blocked, ACLs disabled,
# TLS-only, and a lifecycle that expires old versions and aborts stale multipart uploads.
terraform {
  required_providers {
    aws = { source = "hashicorp/aws", version = "~> 5.100" }
  }
}

variable "bucket" {
  description = "Bucket name"
  type        = string
}

variable "kms_key_arn" {
  description = "KMS key for SSE-KMS"
  type        = string
}

variable "noncurrent_version_expiration_days" {
  description = "Days a superseded object version is kept"
  type        = number
  default     = 90
}

variable "transition_to_ia_days" {
  description = "Days after which current objects move to STANDARD_IA (null: never)"
  type        = number
  default     = null
}

variable "force_destroy" {
  description = "Allow destroying a non-empty bucket (dev only)"
  type        = bool
  default     = false
}

resource "aws_s3_bucket" "this" {
  #checkov:skip=CKV_AWS_144:Cross-region replication is a DR decision per deployment; versioning + backups of the sources (exchange history is re-fetchable) cover the lake
  #checkov:skip=CKV_AWS_18:Access logging would need a separate log bucket per bucket; CloudTrail data events are the audit trail for these buckets
  #checkov:skip=CKV2_AWS_62:No consumer of S3 event notifications: the flows poll the lake by prefix
  bucket        = var.bucket
  force_destroy = var.force_destroy
}

resource "aws_s3_bucket_ownership_controls" "this" {
  bucket = aws_s3_bucket.this.id
  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_versioning" "this" {
  bucket = aws_s3_bucket.this.id
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "this" {
  bucket = aws_s3_bucket.this.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = var.kms_key_arn
    }
    bucket_key_enabled = true
  }
}

resource "aws_s3_bucket_public_access_block" "this" {
  bucket                  = aws_s3_bucket.this.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_lifecycle_configuration" "this" {
  bucket = aws_s3_bucket.this.id

  rule {
    id     = "retention"
    status = "Enabled"
    filter {}
    noncurrent_version_expiration {
      noncurrent_days = var.noncurrent_version_expiration_days
    }
    abort_incomplete_multipart_upload {
      days_after_initiation = 7
    }
    dynamic "transition" {
      for_each = var.transition_to_ia_days == null ? [] : [var.transition_to_ia_days]
      content {
        days          = transition.value
        storage_class = "STANDARD_IA"
      }
    }
  }

  depends_on = [aws_s3_bucket_versioning.this]
}

resource "aws_s3_bucket_policy" "this" {
  bucket = aws_s3_bucket.this.id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Sid       = "DenyInsecureTransport"
      Effect    = "Deny"
      Principal = "*"
      Action    = "s3:*"
      Resource  = [aws_s3_bucket.this.arn, "${aws_s3_bucket.this.arn}/*"]
      Condition = { Bool = { "aws:SecureTransport" = "false" } }
    }]
  })
  depends_on = [aws_s3_bucket_public_access_block.this]
}

output "bucket" {
  value = aws_s3_bucket.this.bucket
}

output "arn" {
  value = aws_s3_bucket.this.arn
}

output "settings" {
  description = "Effective protection settings (read by the terraform tests)"
  value = {
    sse_algorithms    = flatten([for r in aws_s3_bucket_server_side_encryption_configuration.this.rule : [for d in r.apply_server_side_encryption_by_default : d.sse_algorithm]])
    bucket_key        = alltrue([for r in aws_s3_bucket_server_side_encryption_configuration.this.rule : r.bucket_key_enabled])
    versioning_status = one(aws_s3_bucket_versioning.this.versioning_configuration).status
    public_access_block = {
      block_public_acls       = aws_s3_bucket_public_access_block.this.block_public_acls
      block_public_policy     = aws_s3_bucket_public_access_block.this.block_public_policy
      ignore_public_acls      = aws_s3_bucket_public_access_block.this.ignore_public_acls
      restrict_public_buckets = aws_s3_bucket_public_access_block.this.restrict_public_buckets
    }
    object_ownership = one(aws_s3_bucket_ownership_controls.this.rule).object_ownership
    transitions      = flatten([for r in aws_s3_bucket_lifecycle_configuration.this.rule : [for t in r.transition : t.storage_class]])
    noncurrent_days  = var.noncurrent_version_expiration_days
    force_destroy    = aws_s3_bucket.this.force_destroy
  }
}
