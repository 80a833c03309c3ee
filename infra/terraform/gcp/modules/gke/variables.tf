variable "name" {
  description = "Name of the cluster"
  type        = string
}

variable "project_id" {
  description = "The project (its Workload Identity pool is <project>.svc.id.goog)"
  type        = string
}

variable "region" {
  description = "Region of the (regional) cluster"
  type        = string
}

variable "network" {
  description = "The VPC's id"
  type        = string
}

variable "subnetwork" {
  description = "The nodes' subnet"
  type        = string
}

variable "pods_range_name" {
  description = "Secondary range for pods"
  type        = string
}

variable "services_range_name" {
  description = "Secondary range for services"
  type        = string
}

variable "master_ipv4_cidr_block" {
  description = "The control plane's /28"
  type        = string
}

variable "master_authorized_cidrs" {
  description = "Who may reach the control plane's endpoint"
  type        = list(string)
}

variable "machine_type" {
  description = "Node machine type"
  type        = string
}

variable "min_node_count" {
  description = "Fewest nodes per zone"
  type        = number
  default     = 1
}

variable "max_node_count" {
  description = "Most nodes per zone"
  type        = number
}

variable "deletion_protection" {
  description = "Whether terraform may destroy the cluster"
  type        = bool
}

variable "secrets_kms_key" {
  description = "The KMS key Kubernetes Secrets are encrypted with (application-layer encryption)"
  type        = string
}

variable "labels" {
  description = "Labels of the cluster and its nodes"
  type        = map(string)
}
