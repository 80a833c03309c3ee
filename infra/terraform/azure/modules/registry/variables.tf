variable "name" {
  description = "Registry name: 5-50 letters and digits, globally unique"
  type        = string
  validation {
    condition     = can(regex("^[a-zA-Z0-9]{5,50}$", var.name))
    error_message = "A registry name is 5-50 letters and digits."
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

variable "pull_principal_ids" {
  description = "Name => principal (object) id that may pull images (AcrPull): the AKS kubelet identity"
  type        = map(string)
}

variable "retention_days" {
  description = "How long untagged manifests are kept"
  type        = number
  default     = 7
}

variable "endpoint_subnet_id" {
  description = "The private endpoints' subnet"
  type        = string
}

variable "private_dns_zone_id" {
  description = "privatelink.azurecr.io"
  type        = string
}

variable "tags" {
  description = "Tags"
  type        = map(string)
}
