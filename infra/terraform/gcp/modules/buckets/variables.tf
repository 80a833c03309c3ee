variable "name" {
  description = "Prefix of the bucket names (bucket names are global: it should contain the project id)"
  type        = string
}

variable "region" {
  description = "Location of the buckets"
  type        = string
}

variable "kms_key_id" {
  description = "The CMEK the objects are encrypted with"
  type        = string
}

variable "force_destroy" {
  description = "Whether destroying a bucket deletes its objects (dev only)"
  type        = bool
}

variable "noncurrent_version_days" {
  description = "How long overwritten or deleted object versions are kept"
  type        = number
  default     = 30
}

variable "labels" {
  description = "Labels of the buckets"
  type        = map(string)
}
