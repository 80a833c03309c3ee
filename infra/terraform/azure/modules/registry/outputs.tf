output "login_server" {
  description = "<name>.azurecr.io"
  value       = azurerm_container_registry.this.login_server
}

output "id" {
  description = "The registry's id (scope for AcrPush)"
  value       = azurerm_container_registry.this.id
}
