variable "name" {
  description = "Storage account name: 3-24 lowercase letters and digits, globally unique"
  type        = string
  validation {
    condition     = can(regex("^[a-z0-9]{3,24}$", var.name))
    error_message = "A storage account name is 3-24 lowercase letters and digits."
  }
}

variable "location" {
  description = "Azure region"
  type        = string
}

variable "resource_group_name" {
  description = "Resource group"
  type        = string
}

variable "replication_type" {
  description = "ZRS, GZRS, ..."
  type        = string
}

variable "containers" {
  description = "The blob containers to create"
  type        = list(string)
}

variable "retention_days" {
  description = "How long deleted blobs, containers and old versions are recoverable"
  type        = number
  default     = 30
}

variable "endpoint_subnet_id" {
  description = "The private endpoints' subnet"
  type        = string
}

variable "private_dns_zone_id" {
  description = "privatelink.blob.core.windows.net"
  type        = string
}

variable "log_analytics_workspace_id" {
  description = "Where blob access logs go"
  type        = string
}

variable "tags" {
  description = "Tags"
  type        = map(string)
}
