output "lake_uri" {
  description = "Value for CTA_LAKE__URI"
  value       = "s3://${aws_s3_bucket.lake.bucket}/candles"
}

output "quarantine_uri" {
  description = "Value for CTA_VALIDATION__QUARANTINE_URI"
  value       = "s3://${aws_s3_bucket.lake.bucket}/quarantine"
}

output "artifacts_uri" {
  description = "MLflow artifact root"
  value       = "s3://${aws_s3_bucket.artifacts.bucket}"
}

output "storage_policy_arn" {
  value = aws_iam_policy.cta_storage.arn
}
