# Names, host names and ids only: nothing here is secret (Redis access keys and Key Vault secret values are not
# outputs; see README.md for how to read them).

output "resource_group" {
  description = "The resource group everything lives in"
  value       = azurerm_resource_group.this.name
}

output "cluster_name" {
  description = "The AKS cluster (az aks get-credentials --resource-group <resource_group> --name <cluster_name>)"
  value       = module.aks.cluster_name
}

output "oidc_issuer_url" {
  description = "The cluster's OIDC issuer (the federated credentials trust it)"
  value       = module.aks.oidc_issuer_url
}

output "tenant_id" {
  description = "The Entra ID tenant (the azure.workload.identity/tenant-id annotation, if needed)"
  value       = data.azurerm_client_config.current.tenant_id
}

output "postgres_host" {
  description = "PostgreSQL's FQDN (resolves to its private IP inside the VNet; TLS required)"
  value       = module.postgres.fqdn
}

output "redis_host" {
  description = "Redis's host name (private endpoint; TLS on redis_port)"
  value       = module.redis.hostname
}

output "redis_port" {
  description = "Redis's TLS port"
  value       = module.redis.ssl_port
}

output "storage_account" {
  description = "The storage account holding the lake and artifacts containers"
  value       = module.storage.account_name
}

output "blob_endpoint" {
  description = "The storage account's blob endpoint"
  value       = module.storage.blob_endpoint
}

output "lake_bucket" {
  description = "The candle lake's container"
  value       = module.storage.container_names["lake"]
}

output "artifacts_bucket" {
  description = "MLflow's artifact container"
  value       = module.storage.container_names["artifacts"]
}

output "registry_url" {
  description = "ACR's login server: <registry_url>/runtime:<tag>"
  value       = module.registry.login_server
}

output "key_vault_name" {
  description = "The Key Vault the secrets go into"
  value       = module.keyvault.name
}

output "key_vault_uri" {
  description = "The Key Vault's URI"
  value       = module.keyvault.uri
}

output "secret_names" {
  description = "The Key Vault secret names CTA expects (values are added with az keyvault secret set)"
  value       = keys(local.secrets)
}

output "workload_identity_client_ids" {
  description = "CTA service => user-assigned identity client id: the azure.workload.identity/client-id annotations"
  value       = module.identity.client_ids
}

output "kubernetes_service_accounts" {
  description = "The Kubernetes service account (namespace kubernetes_namespace) each identity is federated with"
  value       = local.services
}
