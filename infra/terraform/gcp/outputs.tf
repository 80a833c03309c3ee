# Names, addresses and ids only: nothing here is secret (the Redis AUTH string and the secrets' values are not
# outputs; see README.md for how to read them).

output "cluster_name" {
  description = "The GKE cluster (gcloud container clusters get-credentials <name> --region <region>)"
  value       = module.gke.cluster_name
}

output "region" {
  description = "The region everything lives in"
  value       = var.region
}

output "postgres_host" {
  description = "Cloud SQL's private IP (the databases cta, mlflow, prefect; TLS required)"
  value       = module.postgres.private_ip
}

output "postgres_connection_name" {
  description = "project:region:instance, for the Cloud SQL Auth Proxy / connectors"
  value       = module.postgres.connection_name
}

output "redis_host" {
  description = "Memorystore's private IP (AUTH and TLS on: the port is redis_port)"
  value       = module.redis.host
}

output "redis_port" {
  description = "Memorystore's port"
  value       = module.redis.port
}

output "lake_bucket" {
  description = "The candle lake's bucket"
  value       = module.buckets.lake_bucket
}

output "artifacts_bucket" {
  description = "MLflow's artifact bucket"
  value       = module.buckets.artifacts_bucket
}

output "registry_url" {
  description = "Where the runtime and flows images are pushed: <registry_url>/runtime:<tag>"
  value       = module.registry.url
}

output "secret_ids" {
  description = "Secret Manager secret ids (empty: add versions with gcloud secrets versions add)"
  value       = module.secrets.secret_ids
}

output "service_accounts" {
  description = "Google service account email per CTA service: the iam.gke.io/gcp-service-account annotations"
  value       = module.identity.emails
}

output "kubernetes_service_accounts" {
  description = "The Kubernetes service account (namespace kubernetes_namespace) each Google service account trusts"
  value       = local.services
}
