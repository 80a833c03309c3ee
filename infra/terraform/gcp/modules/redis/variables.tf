variable "name" {
  description = "Name of the Memorystore instance"
  type        = string
}

variable "region" {
  description = "Region of the instance"
  type        = string
}

variable "network" {
  description = "The VPC (private services access must exist)"
  type        = string
}

variable "tier" {
  description = "BASIC (one node) or STANDARD_HA (a replica in another zone, automatic failover)"
  type        = string
  validation {
    condition     = contains(["BASIC", "STANDARD_HA"], var.tier)
    error_message = "tier must be BASIC or STANDARD_HA."
  }
}

variable "memory_size_gb" {
  description = "Size in GiB"
  type        = number
}

variable "labels" {
  description = "Labels of the instance"
  type        = map(string)
}
