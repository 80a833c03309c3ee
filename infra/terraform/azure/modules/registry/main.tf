# Azure Container Registry (Premium: private endpoints, retention, dedicated data endpoints) for CTA's images: the
# admin user is off (pulls and pushes authenticate with Entra ID), no public network access, untagged manifests are
# deleted after retention_days. The AKS kubelet identity gets AcrPull; CI pushes with its own identity (AcrPush,
# granted outside this configuration) from inside the VNet (README.md).

resource "azurerm_container_registry" "this" {
  #checkov:skip=CKV_AZURE_164:Docker Content Trust is being retired by ACR; sign images with Notation/cosign and verify at admission instead
  #checkov:skip=CKV_AZURE_166:quarantine holds every pushed image until a scanner releases it; no scanner is part of this setup (Defender for Containers scans pushed images without blocking)
  #checkov:skip=CKV_AZURE_165:one region: geo-replication would double the registry's cost for no reader outside the region
  #checkov:skip=CKV_AZURE_163:vulnerability scanning is Microsoft Defender for Containers, a subscription-level plan enabled outside this configuration
  name                          = var.name
  location                      = var.location
  resource_group_name           = var.resource_group_name
  sku                           = "Premium"
  admin_enabled                 = false
  public_network_access_enabled = false
  network_rule_bypass_option    = "AzureServices"
  anonymous_pull_enabled        = false
  data_endpoint_enabled         = true
  export_policy_enabled         = false
  zone_redundancy_enabled       = true
  retention_policy_in_days      = var.retention_days
  tags                          = var.tags
}

resource "azurerm_role_assignment" "pull" {
  for_each = var.pull_principal_ids

  scope                            = azurerm_container_registry.this.id
  role_definition_name             = "AcrPull"
  principal_id                     = each.value
  skip_service_principal_aad_check = true
}

resource "azurerm_private_endpoint" "this" {
  name                = "${var.name}-registry"
  location            = var.location
  resource_group_name = var.resource_group_name
  subnet_id           = var.endpoint_subnet_id
  tags                = var.tags

  private_service_connection {
    name                           = "registry"
    private_connection_resource_id = azurerm_container_registry.this.id
    subresource_names              = ["registry"]
    is_manual_connection           = false
  }

  private_dns_zone_group {
    name                 = "registry"
    private_dns_zone_ids = [var.private_dns_zone_id]
  }
}
