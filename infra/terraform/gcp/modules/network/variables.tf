variable "name" {
  description = "Name of the network and its parts"
  type        = string
}

variable "region" {
  description = "Region of the subnet, router and NAT"
  type        = string
}

variable "subnet_cidr" {
  description = "Primary range of the GKE nodes' subnet"
  type        = string
  default     = "10.10.0.0/20"
}

variable "pods_cidr" {
  description = "Secondary range for pods"
  type        = string
  default     = "10.20.0.0/14"
}

variable "services_cidr" {
  description = "Secondary range for services"
  type        = string
  default     = "10.24.0.0/20"
}

variable "master_cidr" {
  description = "The /28 the GKE control plane's private endpoint uses"
  type        = string
  default     = "172.16.0.0/28"
}

variable "private_services_prefix_length" {
  description = "Size of the range reserved for private services access (Cloud SQL, Memorystore)"
  type        = number
  default     = 16
}
