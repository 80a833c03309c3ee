output "account_name" {
  description = "The storage account's name"
  value       = azurerm_storage_account.this.name
}

output "account_id" {
  description = "The storage account's id"
  value       = azurerm_storage_account.this.id
}

output "blob_endpoint" {
  description = "https://<account>.blob.core.windows.net/ (private endpoint inside the VNet)"
  value       = azurerm_storage_account.this.primary_blob_endpoint
}

output "container_names" {
  description = "Container (logical) name => container name"
  value       = { for k, c in azurerm_storage_container.this : k => c.name }
}

output "container_ids" {
  description = "Container name => its Resource Manager id (the scope of the data role assignments)"
  value       = { for k, c in azurerm_storage_container.this : k => "${azurerm_storage_account.this.id}/blobServices/default/containers/${c.name}" }
}
