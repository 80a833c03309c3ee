variable "name" {
  description = "Name of the cache (global DNS name: <name>-redis.redis.cache.windows.net)"
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

variable "sku_name" {
  description = "Standard (primary/replica) or Premium (zones, persistence)"
  type        = string
  validation {
    condition     = contains(["Standard", "Premium"], var.sku_name)
    error_message = "sku_name must be Standard or Premium (Basic has no replica and no SLA)."
  }
}

variable "family" {
  description = "C (Standard) or P (Premium)"
  type        = string
}

variable "capacity" {
  description = "Size within the family"
  type        = number
}

variable "endpoint_subnet_id" {
  description = "The private endpoints' subnet"
  type        = string
}

variable "private_dns_zone_id" {
  description = "privatelink.redis.cache.windows.net"
  type        = string
}

variable "tags" {
  description = "Tags"
  type        = map(string)
}
