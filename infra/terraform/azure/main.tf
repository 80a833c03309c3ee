# CTA on Azure: AKS (private cluster, Entra ID + Azure RBAC, OIDC issuer and workload identity, network policy),
# PostgreSQL Flexible Server (VNet-integrated, no public access: the cta, mlflow and prefect databases), Azure Cache
# for Redis (TLS only, private endpoint), a storage account with the lake and artifacts containers (private
# endpoint, Entra ID only), ACR (admin user off, private endpoint), Key Vault (RBAC, purge protection, private
# endpoint; secrets are added with az, never through terraform) and one user-assigned identity per CTA service,
# federated with its Kubernetes service account. See README.md: validate/plan could not run offline.

locals {
  defaults = {
    dev = {
      system_vm_size      = "Standard_D2ds_v5"
      node_vm_size        = "Standard_D4ds_v5"
      node_max_count      = 3
      postgres_sku        = "B_Standard_B2s"
      postgres_ha         = false
      postgres_storage_mb = 32768
      redis_sku           = "Standard"
      redis_family        = "C"
      redis_capacity      = 1
      storage_replication = "GRS"
      backup_retention    = 7
    }
    prod = {
      system_vm_size      = "Standard_D4ds_v5"
      node_vm_size        = "Standard_D8ds_v5"
      node_max_count      = 6
      postgres_sku        = "GP_Standard_D4ds_v5"
      postgres_ha         = true
      postgres_storage_mb = 131072
      redis_sku           = "Premium"
      redis_family        = "P"
      redis_capacity      = 1
      storage_replication = "GZRS"
      backup_retention    = 35
    }
  }
  env  = var.environment == "prod" ? local.defaults["prod"] : local.defaults["dev"]
  name = "${var.name_prefix}-${var.environment}"
  # Globally unique names (storage account, registry, Key Vault): letters and digits, stable per subscription.
  suffix       = substr(sha1("${var.subscription_id}/${local.name}"), 0, 6)
  compact_name = "${var.name_prefix}${var.environment}${local.suffix}"
  tags = merge(var.tags, {
    project     = "cta"
    environment = var.environment
    managed-by  = "terraform"
  })

  # The Kubernetes service accounts (namespace var.kubernetes_namespace) CTA's workloads run as.
  services = {
    trader         = "cta-trader"
    flows          = "cta-flows"
    mlflow         = "cta-mlflow"
    prefect_worker = "cta-prefect-worker"
  }

  # Blob access per service: the MLflow server owns the artifacts, the flow runs (Kubernetes jobs under cta-flows)
  # write the lake; the Prefect worker only starts jobs and has no data roles.
  container_access = {
    trader = { lake = "Storage Blob Data Reader" }
    flows  = { lake = "Storage Blob Data Contributor" }
    mlflow = { artifacts = "Storage Blob Data Contributor" }
  }

  # Key Vault secret names (added with az keyvault secret set) and who may read them.
  secrets = {
    exchange-api-key    = ["trader"]
    exchange-api-secret = ["trader"]
    trader-api-token    = ["trader"]
    ledger-signing-key  = ["trader"]
    ledger-witness-key  = ["flows"]
    postgres-password   = ["trader", "mlflow"]
    redis-access-key    = ["trader", "flows"]
  }
}

data "azurerm_client_config" "current" {}

resource "azurerm_resource_group" "this" {
  name     = "${local.name}-rg"
  location = var.location
  tags     = local.tags
}

resource "azurerm_log_analytics_workspace" "this" {
  name                = "${local.name}-logs"
  location            = azurerm_resource_group.this.location
  resource_group_name = azurerm_resource_group.this.name
  sku                 = "PerGB2018"
  retention_in_days   = var.environment == "prod" ? 90 : 30
  tags                = local.tags
}

module "network" {
  source = "./modules/network"

  name                = local.name
  location            = azurerm_resource_group.this.location
  resource_group_name = azurerm_resource_group.this.name
  tags                = local.tags
}

module "aks" {
  source = "./modules/aks"

  name                       = local.name
  location                   = azurerm_resource_group.this.location
  resource_group_name        = azurerm_resource_group.this.name
  subnet_id                  = module.network.aks_subnet_id
  tenant_id                  = data.azurerm_client_config.current.tenant_id
  admin_group_object_ids     = var.aks_admin_group_object_ids
  system_vm_size             = local.env.system_vm_size
  node_vm_size               = coalesce(var.node_vm_size, local.env.node_vm_size)
  node_max_count             = coalesce(var.node_max_count, local.env.node_max_count)
  log_analytics_workspace_id = azurerm_log_analytics_workspace.this.id
  tags                       = local.tags
}

module "postgres" {
  source = "./modules/postgres"

  name                    = local.name
  location                = azurerm_resource_group.this.location
  resource_group_name     = azurerm_resource_group.this.name
  delegated_subnet_id     = module.network.postgres_subnet_id
  private_dns_zone_id     = module.network.private_dns_zone_ids["postgres"]
  sku_name                = coalesce(var.postgres_sku, local.env.postgres_sku)
  storage_mb              = local.env.postgres_storage_mb
  high_availability       = local.env.postgres_ha
  backup_retention_days   = local.env.backup_retention
  tenant_id               = data.azurerm_client_config.current.tenant_id
  admin_group_object_id   = var.postgres_admin_group_object_id
  admin_group_name        = var.postgres_admin_group_name
  databases               = ["cta", "mlflow", "prefect"]
  log_analytics_workspace = azurerm_log_analytics_workspace.this.id
  tags                    = local.tags
}

module "redis" {
  source = "./modules/redis"

  name                = local.name
  location            = azurerm_resource_group.this.location
  resource_group_name = azurerm_resource_group.this.name
  sku_name            = local.env.redis_sku
  family              = local.env.redis_family
  capacity            = local.env.redis_capacity
  endpoint_subnet_id  = module.network.endpoints_subnet_id
  private_dns_zone_id = module.network.private_dns_zone_ids["redis"]
  tags                = local.tags
}

module "storage" {
  source = "./modules/storage"

  name                       = local.compact_name
  location                   = azurerm_resource_group.this.location
  resource_group_name        = azurerm_resource_group.this.name
  replication_type           = local.env.storage_replication
  containers                 = ["lake", "artifacts"]
  endpoint_subnet_id         = module.network.endpoints_subnet_id
  private_dns_zone_id        = module.network.private_dns_zone_ids["blob"]
  log_analytics_workspace_id = azurerm_log_analytics_workspace.this.id
  tags                       = local.tags
}

module "registry" {
  source = "./modules/registry"

  name                = "${local.compact_name}acr"
  location            = azurerm_resource_group.this.location
  resource_group_name = azurerm_resource_group.this.name
  pull_principal_ids  = { aks-kubelet = module.aks.kubelet_object_id }
  endpoint_subnet_id  = module.network.endpoints_subnet_id
  private_dns_zone_id = module.network.private_dns_zone_ids["acr"]
  tags                = local.tags
}

module "identity" {
  source = "./modules/identity"

  name                 = local.name
  location             = azurerm_resource_group.this.location
  resource_group_name  = azurerm_resource_group.this.name
  oidc_issuer_url      = module.aks.oidc_issuer_url
  kubernetes_namespace = var.kubernetes_namespace
  services             = local.services
  container_ids        = module.storage.container_ids
  container_access     = local.container_access
  tags                 = local.tags
}

module "keyvault" {
  source = "./modules/keyvault"

  name                       = "${local.compact_name}kv"
  location                   = azurerm_resource_group.this.location
  resource_group_name        = azurerm_resource_group.this.name
  tenant_id                  = data.azurerm_client_config.current.tenant_id
  secrets                    = local.secrets
  readers                    = module.identity.principal_ids
  secrets_exist              = var.key_vault_secrets_exist
  officer_object_ids         = var.secret_officer_object_ids
  operator_ip_ranges         = var.operator_ip_ranges
  endpoint_subnet_id         = module.network.endpoints_subnet_id
  private_dns_zone_id        = module.network.private_dns_zone_ids["vault"]
  log_analytics_workspace_id = azurerm_log_analytics_workspace.this.id
  tags                       = local.tags
}
