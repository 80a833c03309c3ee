variable "name" {
  description = "Name of the repository"
  type        = string
}

variable "region" {
  description = "Location of the repository"
  type        = string
}

variable "readers" {
  description = "IAM members that pull images (the GKE nodes)"
  type        = list(string)
}

variable "keep_versions" {
  description = "How many most recent versions of each image the cleanup policy keeps"
  type        = number
  default     = 20
}

variable "labels" {
  description = "Labels of the repository"
  type        = map(string)
}
