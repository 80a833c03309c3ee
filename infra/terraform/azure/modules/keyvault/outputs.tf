output "name" {
  description = "The vault's name"
  value       = azurerm_key_vault.this.name
}

output "uri" {
  description = "The vault's URI"
  value       = azurerm_key_vault.this.vault_uri
}

output "id" {
  description = "The vault's id"
  value       = azurerm_key_vault.this.id
}
