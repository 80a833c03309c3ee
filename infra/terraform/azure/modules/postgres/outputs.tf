output "fqdn" {
  description = "The server's FQDN (private DNS)"
  value       = azurerm_postgresql_flexible_server.this.fqdn
}

output "server_name" {
  description = "The server's name"
  value       = azurerm_postgresql_flexible_server.this.name
}
