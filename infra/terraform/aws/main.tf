# CTA on AWS: one environment (dev or prod) per state. Sizes and protections differ by environment through
# local.sizes; everything else is the same code path.

data "aws_caller_identity" "current" {}

locals {
  name    = "${var.name_prefix}-${var.environment}"
  is_prod = var.environment == "prod"

  tags = merge(var.tags, {
    project     = "cta"
    environment = var.environment
    managed_by  = "terraform"
  })

  sizes = {
    dev = {
      az_count                  = 2
      single_nat_gateway        = true
      eks_public_endpoint       = true
      eks_node_instance_types   = ["t3.large"]
      eks_node_min_size         = 1
      eks_node_desired_size     = 2
      eks_node_max_size         = 3
      rds_instance_class        = "db.t4g.medium"
      rds_allocated_storage     = 20
      rds_max_allocated_storage = 100
      rds_multi_az              = false
      rds_deletion_protection   = false
      rds_backup_retention_days = 7
      redis_node_type           = "cache.t4g.small"
      redis_num_cache_clusters  = 1
      log_retention_days        = 90
      secret_recovery_days      = 0
      force_destroy             = true
    }
    prod = {
      az_count                  = 3
      single_nat_gateway        = false
      eks_public_endpoint       = false
      eks_node_instance_types   = ["m6i.xlarge"]
      eks_node_min_size         = 3
      eks_node_desired_size     = 3
      eks_node_max_size         = 6
      rds_instance_class        = "db.r6g.large"
      rds_allocated_storage     = 100
      rds_max_allocated_storage = 1000
      rds_multi_az              = true
      rds_deletion_protection   = true
      rds_backup_retention_days = 30
      redis_node_type           = "cache.r6g.large"
      redis_num_cache_clusters  = 2
      log_retention_days        = 365
      secret_recovery_days      = 30
      force_destroy             = false
    }
  }
  size = local.sizes[var.environment]

  # The images deploy/images.py builds (cta/runtime, cta/flows).
  ecr_repositories = ["runtime", "flows"]

  # One secret per CTA secret environment variable (cta.config.SECRET_ENV_VARS) except the database password,
  # which RDS manages itself. Created empty: values are put with `aws secretsmanager put-secret-value`.
  secrets = {
    "exchange-api-key"    = "CTA_API_KEY: exchange API key"
    "exchange-api-secret" = "CTA_API_SECRET: exchange API secret / private key"
    "api-token"           = "CTA_API_TOKEN: bearer token of the CTA HTTP API"
    "ledger-signing-key"  = "CTA_LEDGER_SIGNING_KEY: Ed25519 key of the ledger log"
  }

  services = ["trader", "flows", "mlflow", "prefect_worker"]
}

module "kms" {
  source                  = "./modules/kms"
  name                    = local.name
  account_id              = data.aws_caller_identity.current.account_id
  region                  = var.region
  deletion_window_in_days = local.is_prod ? 30 : 7
}

module "vpc" {
  source                  = "./modules/vpc"
  name                    = local.name
  cidr                    = var.vpc_cidr
  azs                     = coalesce(var.availability_zones, slice([for z in ["a", "b", "c"] : "${var.region}${z}"], 0, local.size.az_count))
  single_nat_gateway      = local.size.single_nat_gateway
  cluster_name            = local.name
  kms_key_arn             = module.kms.key_arn
  flow_log_retention_days = local.size.log_retention_days
}

module "eks" {
  source                 = "./modules/eks"
  name                   = local.name
  kubernetes_version     = var.kubernetes_version
  subnet_ids             = module.vpc.private_subnet_ids
  kms_key_arn            = module.kms.key_arn
  endpoint_public_access = local.size.eks_public_endpoint
  public_access_cidrs    = var.eks_public_access_cidrs
  node_instance_types    = coalesce(var.eks_node_instance_types, local.size.eks_node_instance_types)
  node_min_size          = coalesce(var.eks_node_min_size, local.size.eks_node_min_size)
  node_desired_size      = coalesce(var.eks_node_desired_size, local.size.eks_node_desired_size)
  node_max_size          = coalesce(var.eks_node_max_size, local.size.eks_node_max_size)
  log_retention_days     = local.size.log_retention_days
}

module "rds" {
  source                  = "./modules/rds"
  identifier              = local.name
  vpc_id                  = module.vpc.vpc_id
  subnet_ids              = module.vpc.private_subnet_ids
  allowed_security_groups = { eks_cluster = module.eks.cluster_security_group_id }
  kms_key_arn             = module.kms.key_arn
  instance_class          = coalesce(var.rds_instance_class, local.size.rds_instance_class)
  allocated_storage       = local.size.rds_allocated_storage
  max_allocated_storage   = local.size.rds_max_allocated_storage
  multi_az                = local.size.rds_multi_az
  deletion_protection     = local.size.rds_deletion_protection
  backup_retention_period = local.size.rds_backup_retention_days
}

module "redis" {
  source                   = "./modules/elasticache"
  name                     = local.name
  vpc_id                   = module.vpc.vpc_id
  subnet_ids               = module.vpc.private_subnet_ids
  allowed_security_groups  = { eks_cluster = module.eks.cluster_security_group_id }
  kms_key_arn              = module.kms.key_arn
  node_type                = coalesce(var.redis_node_type, local.size.redis_node_type)
  num_cache_clusters       = local.size.redis_num_cache_clusters
  snapshot_retention_limit = local.is_prod ? 7 : 1
}

module "lake_bucket" {
  source                             = "./modules/s3-bucket"
  bucket                             = "${local.name}-lake-${data.aws_caller_identity.current.account_id}"
  kms_key_arn                        = module.kms.key_arn
  noncurrent_version_expiration_days = local.is_prod ? 365 : 30
  transition_to_ia_days              = local.is_prod ? 90 : null
  force_destroy                      = local.size.force_destroy
}

module "artifacts_bucket" {
  source                             = "./modules/s3-bucket"
  bucket                             = "${local.name}-mlflow-artifacts-${data.aws_caller_identity.current.account_id}"
  kms_key_arn                        = module.kms.key_arn
  noncurrent_version_expiration_days = local.is_prod ? 180 : 30
  force_destroy                      = local.size.force_destroy
}

module "ecr" {
  source       = "./modules/ecr"
  name_prefix  = local.name
  repositories = toset(local.ecr_repositories)
  kms_key_arn  = module.kms.key_arn
  force_delete = local.size.force_destroy
}

module "secrets" {
  source                  = "./modules/secrets"
  name_prefix             = "${var.name_prefix}/${var.environment}"
  secrets                 = local.secrets
  kms_key_arn             = module.kms.key_arn
  recovery_window_in_days = local.size.secret_recovery_days
}

module "logs" {
  source            = "./modules/cloudwatch-logs"
  name_prefix       = "/cta/${var.environment}"
  services          = toset(local.services)
  retention_in_days = local.size.log_retention_days
  kms_key_arn       = module.kms.key_arn
}

locals {
  lake_arn      = module.lake_bucket.arn
  artifacts_arn = module.artifacts_bucket.arn
  kms_use = {
    sid       = "UseDataKey"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [module.kms.key_arn]
  }
  logs_write = {
    for s in local.services : s => {
      sid       = "WriteOwnLogs"
      actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
      resources = ["${module.logs.log_group_arns[s]}:*"]
    }
  }

  # Least privilege per service: only its buckets/prefixes, its secrets, the data key and its own log group.
  irsa_statements = {
    trader = [
      { sid = "ListLake", actions = ["s3:ListBucket"], resources = [local.lake_arn] },
      { sid = "ReadLake", actions = ["s3:GetObject"], resources = ["${local.lake_arn}/*"] },
      { sid = "WriteLedger", actions = ["s3:PutObject"], resources = ["${local.lake_arn}/ledger/*"] },
      {
        sid     = "ReadTradingSecrets"
        actions = ["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"]
        resources = [
          module.secrets.arns["exchange-api-key"], module.secrets.arns["exchange-api-secret"],
          module.secrets.arns["api-token"], module.secrets.arns["ledger-signing-key"], module.rds.master_user_secret_arn,
        ]
      },
      local.kms_use, local.logs_write["trader"],
    ]
    flows = [
      { sid = "ListLake", actions = ["s3:ListBucket"], resources = [local.lake_arn] },
      { sid = "ReadWriteLake", actions = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"], resources = ["${local.lake_arn}/*"] },
      { sid = "ReadDatabaseSecret", actions = ["secretsmanager:GetSecretValue"], resources = [module.rds.master_user_secret_arn] },
      local.kms_use, local.logs_write["flows"],
    ]
    mlflow = [
      { sid = "ListArtifacts", actions = ["s3:ListBucket"], resources = [local.artifacts_arn] },
      { sid = "ReadWriteArtifacts", actions = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"], resources = ["${local.artifacts_arn}/*"] },
      { sid = "ReadDatabaseSecret", actions = ["secretsmanager:GetSecretValue"], resources = [module.rds.master_user_secret_arn] },
      local.kms_use, local.logs_write["mlflow"],
    ]
    prefect_worker = [
      { sid = "ListBuckets", actions = ["s3:ListBucket"], resources = [local.lake_arn, local.artifacts_arn] },
      { sid = "ReadLake", actions = ["s3:GetObject"], resources = ["${local.lake_arn}/*"] },
      { sid = "WriteArtifacts", actions = ["s3:GetObject", "s3:PutObject"], resources = ["${local.artifacts_arn}/*"] },
      { sid = "ReadDatabaseSecret", actions = ["secretsmanager:GetSecretValue"], resources = [module.rds.master_user_secret_arn] },
      local.kms_use, local.logs_write["prefect_worker"],
    ]
  }
}

module "irsa" {
  source            = "./modules/iam-irsa"
  name_prefix       = local.name
  oidc_provider_arn = module.eks.oidc_provider_arn
  oidc_issuer       = module.eks.oidc_issuer
  roles = {
    for s in local.services : s => {
      namespace       = var.kubernetes_namespace
      service_account = "cta-${replace(s, "_", "-")}" # the ServiceAccounts of infra/k8s (cta-trader, ...)
      statements      = local.irsa_statements[s]
    }
  }
}
