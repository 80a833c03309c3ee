output "hostname" {
  description = "The cache's host name (resolves to the private endpoint inside the VNet)"
  value       = azurerm_redis_cache.this.hostname
}

output "ssl_port" {
  description = "The TLS port"
  value       = azurerm_redis_cache.this.ssl_port
}

output "name" {
  description = "The cache's name (az redis list-keys --name <name>)"
  value       = azurerm_redis_cache.this.name
}
