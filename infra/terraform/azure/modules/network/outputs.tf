output "vnet_id" {
  description = "The VNet"
  value       = azurerm_virtual_network.this.id
}

output "aks_subnet_id" {
  description = "The AKS nodes' (and pods') subnet"
  value       = azurerm_subnet.aks.id
  depends_on  = [azurerm_subnet_network_security_group_association.aks]
}

output "postgres_subnet_id" {
  description = "The subnet delegated to PostgreSQL Flexible Server"
  value       = azurerm_subnet.postgres.id
  depends_on  = [azurerm_subnet_network_security_group_association.postgres]
}

output "endpoints_subnet_id" {
  description = "The private endpoints' subnet"
  value       = azurerm_subnet.endpoints.id
  depends_on  = [azurerm_subnet_network_security_group_association.endpoints]
}

output "private_dns_zone_ids" {
  description = "postgres, redis, blob, acr, vault => private DNS zone id (linked to the VNet)"
  value       = { for k, z in azurerm_private_dns_zone.this : k => z.id }
  depends_on  = [azurerm_private_dns_zone_virtual_network_link.this]
}
