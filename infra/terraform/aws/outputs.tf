# What the Kubernetes aws overlay consumes. No output carries a secret value: secrets are referenced by ARN/name.

output "region" {
  value = var.region
}

output "cluster_name" {
  value = module.eks.cluster_name
}

output "rds_endpoint" {
  description = "PostgreSQL host name (port in rds_port)"
  value       = module.rds.address
}

output "rds_port" {
  value = module.rds.port
}

output "rds_database" {
  value = module.rds.db_name
}

output "rds_master_secret_arn" {
  description = "ARN of the RDS-managed secret holding the master credentials (the value stays in Secrets Manager)"
  value       = module.rds.master_user_secret_arn
}

output "redis_endpoint" {
  description = "Redis primary endpoint host (TLS, port in redis_port)"
  value       = module.redis.primary_endpoint_address
}

output "redis_port" {
  value = module.redis.port
}

output "lake_bucket" {
  value = module.lake_bucket.bucket
}

output "artifacts_bucket" {
  value = module.artifacts_bucket.bucket
}

output "lake_uri" {
  description = "Value for CTA_LAKE__URI"
  value       = "s3://${module.lake_bucket.bucket}/candles"
}

output "quarantine_uri" {
  description = "Value for CTA_VALIDATION__QUARANTINE_URI"
  value       = "s3://${module.lake_bucket.bucket}/quarantine"
}

output "artifacts_uri" {
  description = "MLflow artifact root"
  value       = "s3://${module.artifacts_bucket.bucket}"
}

output "ecr_repository_urls" {
  description = "Image target (runtime, flows) => repository URL"
  value       = module.ecr.repository_urls
}

output "irsa_role_arns" {
  description = "Service (trader, flows, mlflow, prefect_worker) => IAM role ARN for its service account's eks.amazonaws.com/role-arn annotation"
  value       = module.irsa.role_arns
}

output "secret_arns" {
  description = "Secret short name => Secrets Manager ARN (values are put out of band, never through terraform)"
  value       = module.secrets.arns
}

output "secret_names" {
  value = module.secrets.names
}

output "log_groups" {
  value = module.logs.log_group_names
}

output "kms_key_arn" {
  value = module.kms.key_arn
}

output "tags" {
  description = "The default tags every resource carries"
  value       = local.tags
}
