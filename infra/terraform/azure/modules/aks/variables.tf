variable "name" {
  description = "Name of the cluster"
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

variable "subnet_id" {
  description = "The nodes' subnet"
  type        = string
}

variable "tenant_id" {
  description = "Entra ID tenant (Azure RBAC for Kubernetes)"
  type        = string
}

variable "admin_group_object_ids" {
  description = "Entra ID groups that are cluster admins"
  type        = list(string)
}

variable "kubernetes_version" {
  description = "Kubernetes minor version; null: AKS's default (the upgrade channel keeps it patched)"
  type        = string
  default     = null
}

variable "system_vm_size" {
  description = "System node pool VM size"
  type        = string
}

variable "node_vm_size" {
  description = "Workload node pool VM size"
  type        = string
}

variable "node_min_count" {
  description = "Fewest workload nodes"
  type        = number
  default     = 1
}

variable "node_max_count" {
  description = "Most workload nodes"
  type        = number
}

variable "service_cidr" {
  description = "Kubernetes services' range (must not overlap the VNet)"
  type        = string
  default     = "10.31.0.0/16"
}

variable "dns_service_ip" {
  description = "CoreDNS's address inside service_cidr"
  type        = string
  default     = "10.31.0.10"
}

variable "log_analytics_workspace_id" {
  description = "Where Container Insights sends logs"
  type        = string
}

variable "tags" {
  description = "Tags"
  type        = map(string)
}
