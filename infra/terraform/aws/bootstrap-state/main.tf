# Creates the S3 bucket that holds the aws root's remote state (run once per account, with local state):
#   terraform init && terraform apply -var region=eu-central-1
# then put its `state_bucket` output into ../backend-prod.hcl. Locking uses S3-native lock files
# (use_lockfile = true, terraform >= 1.10), so no DynamoDB table is needed.
terraform {
  required_version = ">= 1.11"
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.100"
    }
  }
}

variable "region" {
  type    = string
  default = "eu-central-1"
}

variable "name_prefix" {
  type    = string
  default = "cta"
}

provider "aws" {
  region = var.region
  default_tags {
    tags = { project = "cta", environment = "shared", managed_by = "terraform", purpose = "terraform-state" }
  }
}

data "aws_caller_identity" "current" {}

module "kms" {
  source                  = "../modules/kms"
  name                    = "${var.name_prefix}-tfstate"
  account_id              = data.aws_caller_identity.current.account_id
  region                  = var.region
  deletion_window_in_days = 30
}

module "state_bucket" {
  source                             = "../modules/s3-bucket"
  bucket                             = "${var.name_prefix}-tfstate-${data.aws_caller_identity.current.account_id}-${var.region}"
  kms_key_arn                        = module.kms.key_arn
  noncurrent_version_expiration_days = 365
  force_destroy                      = false
}

output "state_bucket" {
  value = module.state_bucket.bucket
}

output "state_kms_key_arn" {
  value = module.kms.key_arn
}
