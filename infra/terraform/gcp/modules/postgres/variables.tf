variable "name" {
  description = "Name of the Cloud SQL instance"
  type        = string
}

variable "region" {
  description = "Region of the instance"
  type        = string
}

variable "network" {
  description = "The VPC the instance takes its private IP in (private services access must exist)"
  type        = string
}

variable "tier" {
  description = "Machine tier (db-custom-<vCPUs>-<MiB>)"
  type        = string
}

variable "high_availability" {
  description = "REGIONAL (a standby in another zone) with point-in-time recovery, or ZONAL"
  type        = bool
}

variable "deletion_protection" {
  description = "Whether terraform and the API refuse to delete the instance"
  type        = bool
}

variable "databases" {
  description = "The databases to create"
  type        = list(string)
}

variable "disk_size_gb" {
  description = "Initial disk size (grows automatically)"
  type        = number
  default     = 20
}

variable "labels" {
  description = "User labels of the instance"
  type        = map(string)
}
