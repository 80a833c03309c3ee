variable "project_id" {
  description = "The Google Cloud project everything is created in"
  type        = string
}

variable "region" {
  description = "Google Cloud region (GKE, Cloud SQL, Memorystore, the buckets and Artifact Registry all live here)"
  type        = string
  default     = "europe-west3"
}

variable "environment" {
  description = "dev or prod: prod gets HA Postgres and Redis, deletion protection, PITR and bigger nodes"
  type        = string
  default     = "dev"
  validation {
    condition     = contains(["dev", "prod"], var.environment)
    error_message = "environment must be \"dev\" or \"prod\"."
  }
}

variable "name_prefix" {
  description = "Prefix of every resource name (lowercase letters, digits, hyphens)"
  type        = string
  default     = "cta"
  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,9}$", var.name_prefix))
    error_message = "name_prefix must be 2-10 lowercase letters, digits or hyphens, starting with a letter (service account ids are at most 30 characters)."
  }
}

variable "labels" {
  description = "Extra labels put on every resource that takes labels"
  type        = map(string)
  default     = {}
}

variable "kubernetes_namespace" {
  description = "The namespace CTA's Kubernetes service accounts live in (Workload Identity bindings)"
  type        = string
  default     = "cta"
}

variable "master_authorized_cidrs" {
  description = "CIDRs allowed to reach the GKE control plane's endpoint (e.g. a bastion or VPN range); never 0.0.0.0/0"
  type        = list(string)
  default     = ["10.0.0.0/8"]
  validation {
    condition     = alltrue([for c in var.master_authorized_cidrs : can(cidrhost(c, 0)) && c != "0.0.0.0/0"])
    error_message = "master_authorized_cidrs must be valid CIDRs and must not include 0.0.0.0/0."
  }
}

variable "node_machine_type" {
  description = "GKE node machine type; null picks the environment's default"
  type        = string
  default     = null
}

variable "node_max_count" {
  description = "Most GKE nodes per zone; null picks the environment's default"
  type        = number
  default     = null
}

variable "postgres_tier" {
  description = "Cloud SQL machine tier; null picks the environment's default"
  type        = string
  default     = null
}

variable "redis_memory_size_gb" {
  description = "Memorystore size in GiB; null picks the environment's default"
  type        = number
  default     = null
}
