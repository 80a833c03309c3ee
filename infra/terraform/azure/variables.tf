variable "subscription_id" {
  description = "The Azure subscription everything is created in"
  type        = string
}

variable "location" {
  description = "Azure region"
  type        = string
  default     = "westeurope"
}

variable "environment" {
  description = "dev or prod: prod gets zone-redundant HA Postgres with geo-redundant backups, Premium Redis, more nodes"
  type        = string
  default     = "dev"
  validation {
    condition     = contains(["dev", "prod"], var.environment)
    error_message = "environment must be \"dev\" or \"prod\"."
  }
}

variable "name_prefix" {
  description = "Prefix of every resource name (lowercase letters and digits: storage and registry names allow nothing else)"
  type        = string
  default     = "cta"
  validation {
    condition     = can(regex("^[a-z][a-z0-9]{1,7}$", var.name_prefix))
    error_message = "name_prefix must be 2-8 lowercase letters or digits, starting with a letter."
  }
}

variable "tags" {
  description = "Extra tags put on every resource"
  type        = map(string)
  default     = {}
}

variable "kubernetes_namespace" {
  description = "The namespace CTA's Kubernetes service accounts live in (federated identity subjects)"
  type        = string
  default     = "cta"
}

variable "aks_admin_group_object_ids" {
  description = "Entra ID groups that are cluster admins (AKS uses Entra ID + Azure RBAC; local accounts are off)"
  type        = list(string)
  default     = []
}

variable "postgres_admin_group_object_id" {
  description = "Object id of the Entra ID group that administers PostgreSQL (password auth is off)"
  type        = string
}

variable "postgres_admin_group_name" {
  description = "Display name of that group (the PostgreSQL role it maps to)"
  type        = string
}

variable "secret_officer_object_ids" {
  description = "Principals that may set Key Vault secrets (Key Vault Secrets Officer): the operators"
  type        = list(string)
  default     = []
}

variable "key_vault_secrets_exist" {
  description = "Set to true once the secrets were added with az keyvault secret set: then each service gets read access to exactly its secrets"
  type        = bool
  default     = false
}

variable "operator_ip_ranges" {
  description = "Public IP ranges (CIDR) that may reach Key Vault's data plane to set secrets; empty: only through the VNet"
  type        = list(string)
  default     = []
  validation {
    condition     = alltrue([for c in var.operator_ip_ranges : can(cidrhost(c, 0)) && c != "0.0.0.0/0"])
    error_message = "operator_ip_ranges must be valid CIDRs and must not include 0.0.0.0/0."
  }
}

variable "node_vm_size" {
  description = "AKS workload node size; null picks the environment's default"
  type        = string
  default     = null
}

variable "node_max_count" {
  description = "Most AKS workload nodes; null picks the environment's default"
  type        = number
  default     = null
}

variable "postgres_sku" {
  description = "PostgreSQL Flexible Server SKU; null picks the environment's default"
  type        = string
  default     = null
}
