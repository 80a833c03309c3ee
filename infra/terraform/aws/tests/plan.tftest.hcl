# Plan-only checks of the aws root with a mocked provider (no AWS, no credentials):
#   terraform init -backend=false && terraform test
# Encryption everywhere, nothing public, names and tags, and what differs between dev and prod. Assertions read the
# modules' `settings` outputs, which are the planned resources' own attributes.

mock_provider "aws" {
  mock_data "aws_caller_identity" {
    defaults = {
      account_id = "123456789012"
    }
  }
}

variables {
  environment = "dev"
  region      = "eu-central-1"
}

run "encryption_everywhere" {
  command = plan

  assert {
    condition     = module.lake_bucket.settings.sse_algorithms == ["aws:kms"] && module.artifacts_bucket.settings.sse_algorithms == ["aws:kms"]
    error_message = "both buckets must use SSE-KMS"
  }
  assert {
    condition     = module.lake_bucket.settings.bucket_key && module.artifacts_bucket.settings.bucket_key
    error_message = "S3 bucket keys must be on"
  }
  assert {
    condition     = module.rds.settings.storage_encrypted == true
    error_message = "RDS storage must be encrypted"
  }
  assert {
    condition     = module.redis.settings.at_rest_encryption_enabled == true && module.redis.settings.transit_encryption_enabled == true
    error_message = "ElastiCache must encrypt at rest and in transit"
  }
  assert {
    condition     = module.eks.settings.encrypted_resources == toset(["secrets"])
    error_message = "EKS must envelope-encrypt Kubernetes secrets"
  }
  assert {
    condition     = alltrue([for r in values(module.ecr.settings) : r.encryption_type == "KMS"])
    error_message = "ECR repositories must use KMS"
  }
  assert {
    condition     = module.kms.settings.enable_key_rotation == true
    error_message = "the KMS key must rotate"
  }
}

run "nothing_public" {
  command = plan

  assert {
    condition     = module.rds.settings.publicly_accessible == false
    error_message = "RDS must not be publicly accessible"
  }
  assert {
    condition = alltrue(flatten([
      for b in [module.lake_bucket, module.artifacts_bucket] : values(b.settings.public_access_block)
    ]))
    error_message = "every S3 public access block setting must be on"
  }
  assert {
    condition     = module.lake_bucket.settings.object_ownership == "BucketOwnerEnforced"
    error_message = "ACLs must be disabled"
  }
  assert {
    condition     = length(module.rds.settings.ingress_cidrs) == 1 && alltrue([for c in module.rds.settings.ingress_cidrs : c == null]) && alltrue([for p in module.rds.settings.ingress_ports : p == 5432])
    error_message = "PostgreSQL is reachable only from the cluster security group, never from a CIDR"
  }
  assert {
    condition     = length(module.redis.settings.ingress_cidrs) == 1 && alltrue([for c in module.redis.settings.ingress_cidrs : c == null])
    error_message = "Redis is reachable only from the cluster security group, never from a CIDR"
  }
  assert {
    condition     = module.eks.settings.endpoint_private_access == true
    error_message = "the EKS private endpoint must be on"
  }
  assert {
    condition     = !contains(module.eks.settings.public_access_cidrs, "0.0.0.0/0")
    error_message = "the dev EKS public endpoint must not be open to the internet"
  }
  assert {
    condition     = !anytrue(module.vpc.private_subnets_map_public_ip)
    error_message = "private subnets must not assign public IPs"
  }
}

run "names_and_tags" {
  command = plan

  assert {
    condition     = output.tags == { project = "cta", environment = "dev", managed_by = "terraform" }
    error_message = "default tags: project, environment, managed_by"
  }
  assert {
    condition     = output.lake_bucket == "cta-dev-lake-123456789012" && output.artifacts_bucket == "cta-dev-mlflow-artifacts-123456789012"
    error_message = "bucket names: <prefix>-<env>-<purpose>-<account>"
  }
  assert {
    condition     = output.lake_uri == "s3://cta-dev-lake-123456789012/candles"
    error_message = "lake URI"
  }
  assert {
    condition     = output.cluster_name == "cta-dev" && output.region == "eu-central-1"
    error_message = "cluster name and region outputs"
  }
  assert {
    condition     = keys(output.irsa_role_arns) == ["flows", "mlflow", "prefect_worker", "trader"]
    error_message = "one IRSA role per service"
  }
  assert {
    condition     = values(module.irsa.role_names) == ["cta-dev-flows", "cta-dev-mlflow", "cta-dev-prefect-worker", "cta-dev-trader"]
    error_message = "IRSA role names"
  }
  assert {
    condition     = keys(output.ecr_repository_urls) == ["flows", "runtime"] && module.ecr.settings.runtime.name == "cta-dev/runtime"
    error_message = "one ECR repository per image target"
  }
  assert {
    condition     = sort(values(output.secret_names)) == tolist(["cta/dev/api-token", "cta/dev/exchange-api-key", "cta/dev/exchange-api-secret", "cta/dev/ledger-signing-key"])
    error_message = "secret names: <prefix>/<env>/<name>"
  }
  assert {
    condition     = alltrue([for r in values(module.ecr.settings) : r.tag_mutability == "IMMUTABLE" && r.scan_on_push])
    error_message = "ECR: immutable tags, scan on push"
  }
}

run "dev_sizes" {
  command = plan

  assert {
    condition     = module.rds.settings.multi_az == false && module.rds.settings.deletion_protection == false && module.rds.settings.skip_final_snapshot == true
    error_message = "dev RDS: single-AZ, no deletion protection, no final snapshot"
  }
  assert {
    condition     = module.rds.settings.backup_retention_period == 7 && module.rds.settings.instance_class == "db.t4g.medium"
    error_message = "dev RDS: 7 days of backups, small instance"
  }
  assert {
    condition     = module.rds.settings.manage_master_user_password == true
    error_message = "the RDS master password is generated and kept by Secrets Manager"
  }
  assert {
    condition     = module.eks.settings.endpoint_public_access == true
    error_message = "dev EKS keeps a (CIDR-restricted) public endpoint"
  }
  assert {
    condition     = length(module.vpc.private_subnet_ids) == 2 && module.vpc.nat_gateway_count == 1
    error_message = "dev VPC: 2 AZs, one NAT gateway"
  }
  assert {
    condition     = module.redis.settings.num_cache_clusters == 1 && module.redis.settings.automatic_failover_enabled == false
    error_message = "dev Redis: a single node"
  }
  assert {
    condition     = module.eks.settings.node_scaling.desired_size == 2 && module.eks.settings.node_instance_types == tolist(["t3.large"])
    error_message = "dev node group size"
  }
  assert {
    condition     = module.lake_bucket.settings.force_destroy && alltrue([for s in values(module.secrets.settings) : s.recovery_window_in_days == 0])
    error_message = "dev buckets and secrets can be torn down at once"
  }
}

run "prod_sizes_and_protection" {
  command = plan

  variables {
    environment = "prod"
  }

  assert {
    condition     = module.rds.settings.multi_az == true && module.rds.settings.deletion_protection == true && module.rds.settings.skip_final_snapshot == false
    error_message = "prod RDS: Multi-AZ, deletion protection, final snapshot"
  }
  assert {
    condition     = module.rds.settings.backup_retention_period == 30 && module.rds.settings.publicly_accessible == false
    error_message = "prod RDS: 30 days of backups, private"
  }
  assert {
    condition     = module.eks.settings.endpoint_public_access == false && module.eks.settings.endpoint_private_access == true && length(module.eks.settings.public_access_cidrs) == 0
    error_message = "prod EKS: private endpoint only"
  }
  assert {
    condition     = length(module.vpc.private_subnet_ids) == 3 && module.vpc.nat_gateway_count == 3 && module.vpc.azs == tolist(["eu-central-1a", "eu-central-1b", "eu-central-1c"])
    error_message = "prod VPC: 3 AZs, a NAT gateway per AZ"
  }
  assert {
    condition     = module.redis.settings.num_cache_clusters == 2 && module.redis.settings.automatic_failover_enabled && module.redis.settings.multi_az_enabled
    error_message = "prod Redis: primary + replica with automatic failover"
  }
  assert {
    condition     = alltrue([for s in values(module.secrets.settings) : s.recovery_window_in_days == 30])
    error_message = "prod secrets stay recoverable for 30 days"
  }
  assert {
    condition     = alltrue([for d in values(module.logs.retention_in_days) : d == 365])
    error_message = "prod logs kept a year"
  }
  assert {
    condition     = !module.lake_bucket.settings.force_destroy && !module.artifacts_bucket.settings.force_destroy && !anytrue([for r in values(module.ecr.settings) : r.force_delete])
    error_message = "prod buckets and repositories cannot be destroyed with data in them"
  }
  assert {
    condition     = length(module.lake_bucket.settings.transitions) == 1 && module.lake_bucket.settings.transitions[0] == "STANDARD_IA" && length(module.artifacts_bucket.settings.transitions) == 0 && module.lake_bucket.settings.noncurrent_days == 365
    error_message = "prod lake lifecycle: keep old versions a year, move to IA"
  }
  assert {
    condition     = output.tags.environment == "prod" && output.lake_bucket == "cta-prod-lake-123456789012" && output.cluster_name == "cta-prod"
    error_message = "prod names and tags"
  }
}

run "environment_is_validated" {
  command = plan

  variables {
    environment = "staging"
  }

  expect_failures = [var.environment]
}
