# Key Vault for CTA's secrets: Azure RBAC (no access policies), purge protection and 90 days of soft delete, no public
# network access unless operator_ip_ranges are given (a private endpoint in the VNet otherwise), audit log to Log
# Analytics. Terraform creates NO secrets: an azurerm_key_vault_secret would put its value in the state (it reads
# the latest version back). Operators add them with az keyvault secret set (README.md), then set
# key_vault_secrets_exist = true and apply again: each service then gets Key Vault Secrets User on exactly its
# secrets (a role assignment's scope must exist, hence the two steps).

locals {
  grants = var.secrets_exist ? merge([
    for secret, services in var.secrets : {
      for service in services : "${secret}/${service}" => { secret = secret, service = service }
    }
  ]...) : {}
}

resource "azurerm_key_vault" "this" {
  name                          = var.name
  location                      = var.location
  resource_group_name           = var.resource_group_name
  tenant_id                     = var.tenant_id
  sku_name                      = "standard"
  rbac_authorization_enabled    = true
  purge_protection_enabled      = true
  soft_delete_retention_days    = 90
  public_network_access_enabled = length(var.operator_ip_ranges) > 0
  tags                          = var.tags

  network_acls {
    default_action = "Deny"
    bypass         = "AzureServices"
    ip_rules       = var.operator_ip_ranges
  }
}

resource "azurerm_role_assignment" "officers" {
  for_each = toset(var.officer_object_ids)

  scope                = azurerm_key_vault.this.id
  role_definition_name = "Key Vault Secrets Officer"
  principal_id         = each.value
}

resource "azurerm_role_assignment" "readers" {
  for_each = local.grants

  scope                            = "${azurerm_key_vault.this.id}/secrets/${each.value.secret}"
  role_definition_name             = "Key Vault Secrets User"
  principal_id                     = var.readers[each.value.service]
  skip_service_principal_aad_check = true
}

resource "azurerm_private_endpoint" "this" {
  name                = "${var.name}-vault"
  location            = var.location
  resource_group_name = var.resource_group_name
  subnet_id           = var.endpoint_subnet_id
  tags                = var.tags

  private_service_connection {
    name                           = "vault"
    private_connection_resource_id = azurerm_key_vault.this.id
    subresource_names              = ["vault"]
    is_manual_connection           = false
  }

  private_dns_zone_group {
    name                 = "vault"
    private_dns_zone_ids = [var.private_dns_zone_id]
  }
}

resource "azurerm_monitor_diagnostic_setting" "this" {
  name                       = "audit"
  target_resource_id         = azurerm_key_vault.this.id
  log_analytics_workspace_id = var.log_analytics_workspace_id

  enabled_log {
    category = "AuditEvent"
  }
}
