variable "name" {
  description = "Prefix of the service accounts' ids"
  type        = string
}

variable "workload_pool" {
  description = "The cluster's Workload Identity pool (<project>.svc.id.goog)"
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

variable "buckets" {
  description = "Logical bucket name (lake, artifacts) => bucket name"
  type        = map(string)
}

variable "bucket_access" {
  description = "CTA service => {logical bucket name => role} (objectViewer to read, objectUser to read and write)"
  type        = map(map(string))
  default     = {}
}
