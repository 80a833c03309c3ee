terraform {
  required_version = ">= 1.11"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.100"
    }
  }

  # Remote state for shared environments (prod): S3 with S3-native locking. Configured at init time,
  #   terraform init -backend-config=backend-prod.hcl
  # (see backend-prod.hcl.example; the bucket comes from ./bootstrap-state). CI validates and tests with
  # `terraform init -backend=false`, so nothing here needs AWS to be checked.
  backend "s3" {}
}
