variable "name" {
  description = "Name of the VNet and its parts"
  type        = string
}

variable "location" {
  description = "Azure region"
  type        = string
}

variable "resource_group_name" {
  description = "Resource group"
  type        = string
}

variable "address_space" {
  description = "The VNet's address space"
  type        = string
  default     = "10.30.0.0/16"
}

variable "tags" {
  description = "Tags"
  type        = map(string)
}
