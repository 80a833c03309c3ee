variable "name_prefix" {
  description = "Prefix of the secret ids"
  type        = string
}

variable "secrets" {
  description = "Secret id (without the prefix) => the services that may read it"
  type        = map(list(string))
}

variable "accessors" {
  description = "Service => IAM member (serviceAccount:<email>)"
  type        = map(string)
}

variable "labels" {
  description = "Labels of the secrets"
  type        = map(string)
}
