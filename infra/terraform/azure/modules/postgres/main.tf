# PostgreSQL Flexible Server 16, VNet-integrated (a delegated subnet and a private DNS zone: no public endpoint,
# public_network_access_enabled = false), TLS 1.2+ required, Entra ID authentication only (no administrator
# password exists, so none is in the state), geo-redundant backups, zone-redundant HA in prod.
# CTA connects with a password (a libpq DSN): README.md shows how an operator turns password authentication on out of
# band with az (terraform ignores that change) and keeps the password in Key Vault.

resource "azurerm_postgresql_flexible_server" "this" {
  #checkov:skip=CKV2_AZURE_57:VNet integration (a delegated subnet, no public endpoint at all) is the private-access model used here; a private endpoint is the alternative model and cannot be combined with it
  name                          = "${var.name}-pg"
  location                      = var.location
  resource_group_name           = var.resource_group_name
  version                       = "16"
  sku_name                      = var.sku_name
  storage_mb                    = var.storage_mb
  auto_grow_enabled             = true
  delegated_subnet_id           = var.delegated_subnet_id
  private_dns_zone_id           = var.private_dns_zone_id
  public_network_access_enabled = false
  backup_retention_days         = var.backup_retention_days
  geo_redundant_backup_enabled  = true # can only be chosen at creation: on in dev too
  zone                          = "1"
  tags                          = var.tags

  authentication {
    active_directory_auth_enabled = true
    password_auth_enabled         = false
    tenant_id                     = var.tenant_id
  }

  dynamic "high_availability" {
    for_each = var.high_availability ? [1] : []
    content {
      mode                      = "ZoneRedundant"
      standby_availability_zone = "2"
    }
  }

  maintenance_window {
    day_of_week  = 0
    start_hour   = 3
    start_minute = 0
  }

  lifecycle {
    # Operators may enable password authentication with az (README.md); terraform must not turn it off again.
    ignore_changes = [authentication[0].password_auth_enabled, administrator_login, zone]
  }
}

resource "azurerm_postgresql_flexible_server_active_directory_administrator" "this" {
  server_name         = azurerm_postgresql_flexible_server.this.name
  resource_group_name = var.resource_group_name
  tenant_id           = var.tenant_id
  object_id           = var.admin_group_object_id
  principal_name      = var.admin_group_name
  principal_type      = "Group"
}

resource "azurerm_postgresql_flexible_server_configuration" "this" {
  for_each = {
    require_secure_transport = "on"
    ssl_min_protocol_version = "TLSv1.2"
    log_checkpoints          = "on"
    log_connections          = "on"
    log_disconnections       = "on"
  }

  server_id = azurerm_postgresql_flexible_server.this.id
  name      = each.key
  value     = each.value
}

resource "azurerm_postgresql_flexible_server_database" "this" {
  for_each = toset(var.databases)

  name      = each.value
  server_id = azurerm_postgresql_flexible_server.this.id
  charset   = "UTF8"
  collation = "en_US.utf8"
}

resource "azurerm_monitor_diagnostic_setting" "this" {
  name                       = "logs"
  target_resource_id         = azurerm_postgresql_flexible_server.this.id
  log_analytics_workspace_id = var.log_analytics_workspace

  enabled_log {
    category = "PostgreSQLLogs"
  }
}
