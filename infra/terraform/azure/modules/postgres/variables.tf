variable "name" {
  description = "Name of the server (global DNS name: <name>-pg.postgres.database.azure.com)"
  type        = string
}

variable "location" {
  description = "Azure region"
  type        = string
}

variable "resource_group_name" {
  description = "Resource group"
  type        = string
}

variable "delegated_subnet_id" {
  description = "The subnet delegated to Microsoft.DBforPostgreSQL/flexibleServers"
  type        = string
}

variable "private_dns_zone_id" {
  description = "The private DNS zone (*.postgres.database.azure.com) linked to the VNet"
  type        = string
}

variable "sku_name" {
  description = "SKU (B_Standard_B2s, GP_Standard_D4ds_v5, ...)"
  type        = string
}

variable "storage_mb" {
  description = "Storage size in MB"
  type        = number
}

variable "high_availability" {
  description = "A zone-redundant standby"
  type        = bool
}

variable "backup_retention_days" {
  description = "Backup (point-in-time restore) retention, 7-35 days"
  type        = number
}

variable "tenant_id" {
  description = "Entra ID tenant"
  type        = string
}

variable "admin_group_object_id" {
  description = "The Entra ID group that administers the server"
  type        = string
}

variable "admin_group_name" {
  description = "That group's display name"
  type        = string
}

variable "databases" {
  description = "The databases to create"
  type        = list(string)
}

variable "log_analytics_workspace" {
  description = "Where the server's logs go"
  type        = string
}

variable "tags" {
  description = "Tags"
  type        = map(string)
}
