variable "name" {
  description = "Name of the key ring"
  type        = string
}

variable "region" {
  description = "Location of the key ring (the same region as the buckets and the cluster)"
  type        = string
}

variable "project_number" {
  description = "The project's number (the GKE service agent's address contains it)"
  type        = string
}

variable "labels" {
  description = "Labels of the keys"
  type        = map(string)
}

variable "rotation_period" {
  description = "How often the keys rotate"
  type        = string
  default     = "7776000s" # 90 days
}
