provider "aws" {
  region = var.region

  # Every taggable resource carries these (modules set only Name-like tags of their own).
  default_tags {
    tags = local.tags
  }
}
