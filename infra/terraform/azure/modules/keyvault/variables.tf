variable "name" {
  description = "Vault name: 3-24 letters, digits and hyphens, globally unique"
  type        = string
  validation {
    condition     = can(regex("^[a-zA-Z][a-zA-Z0-9-]{1,22}[a-zA-Z0-9]$", var.name))
    error_message = "A Key Vault name is 3-24 letters, digits and hyphens, starting with a letter."
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

variable "tenant_id" {
  description = "Entra ID tenant"
  type        = string
}

variable "secrets" {
  description = "Secret name => the services that may read it"
  type        = map(list(string))
}

variable "readers" {
  description = "Service => principal (object) id of its identity"
  type        = map(string)
}

variable "secrets_exist" {
  description = "Whether the secrets have been added (per-secret role assignments need the secret to exist)"
  type        = bool
}

variable "officer_object_ids" {
  description = "Principals that may set secrets (Key Vault Secrets Officer)"
  type        = list(string)
}

variable "operator_ip_ranges" {
  description = "Public CIDRs allowed to the data plane (empty: private endpoint only)"
  type        = list(string)
}

variable "endpoint_subnet_id" {
  description = "The private endpoints' subnet"
  type        = string
}

variable "private_dns_zone_id" {
  description = "privatelink.vaultcore.azure.net"
  type        = string
}

variable "log_analytics_workspace_id" {
  description = "Where the vault's audit log goes"
  type        = string
}

variable "tags" {
  description = "Tags"
  type        = map(string)
}
