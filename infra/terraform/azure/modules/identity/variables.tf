variable "name" {
  description = "Prefix of the identities' names"
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

variable "oidc_issuer_url" {
  description = "The AKS cluster's OIDC issuer"
  type        = string
}

variable "kubernetes_namespace" {
  description = "Namespace of the Kubernetes service accounts"
  type        = string
}

variable "services" {
  description = "CTA service => its Kubernetes service account"
  type        = map(string)
}

variable "container_ids" {
  description = "Container name => its Resource Manager id"
  type        = map(string)
}

variable "container_access" {
  description = "CTA service => {container name => role (Storage Blob Data Reader/Contributor)}"
  type        = map(map(string))
  default     = {}
}

variable "tags" {
  description = "Tags"
  type        = map(string)
}
