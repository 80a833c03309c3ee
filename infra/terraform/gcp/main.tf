# CTA on Google Cloud: GKE (private nodes, Workload Identity), Cloud SQL for PostgreSQL (private IP only: the
# cta, mlflow and prefect databases), Memorystore for Redis (Feast's online store: AUTH + TLS), GCS (the candle
# lake and MLflow's artifacts, CMEK), Artifact Registry (the runtime and flows images), Secret Manager (empty
# secrets: values are added with gcloud, never through terraform) and one Google service account per CTA service,
# bound to its Kubernetes service account. See README.md: validate/plan could not run offline.

locals {
  # What differs between dev and prod; the variables override the sizes.
  defaults = {
    dev = {
      node_machine_type    = "e2-standard-4"
      node_max_count       = 2
      postgres_tier        = "db-custom-1-3840"
      postgres_ha          = false
      redis_tier           = "BASIC"
      redis_memory_size_gb = 1
      deletion_protection  = false
      force_destroy        = true
    }
    prod = {
      node_machine_type    = "e2-standard-8"
      node_max_count       = 4
      postgres_tier        = "db-custom-4-15360"
      postgres_ha          = true
      redis_tier           = "STANDARD_HA"
      redis_memory_size_gb = 5
      deletion_protection  = true
      force_destroy        = false
    }
  }
  env  = var.environment == "prod" ? local.defaults["prod"] : local.defaults["dev"]
  name = "${var.name_prefix}-${var.environment}"
  labels = merge(var.labels, {
    project     = "cta"
    environment = var.environment
    managed-by  = "terraform"
  })

  # The Kubernetes service accounts (namespace var.kubernetes_namespace) CTA's workloads run as.
  services = {
    trader         = "cta-trader"
    flows          = "cta-flows"
    mlflow         = "cta-mlflow"
    prefect_worker = "cta-prefect-worker"
  }

  # Object access per service. The MLflow server owns the artifacts (clients go through it); the flow runs
  # (Kubernetes jobs under cta-flows) write the lake. The Prefect worker only talks to the Prefect API and starts
  # jobs: its identity has no cloud roles.
  bucket_access = {
    trader = { lake = "roles/storage.objectViewer" }
    flows  = { lake = "roles/storage.objectUser" }
    mlflow = { artifacts = "roles/storage.objectUser" }
  }

  # Secret Manager secret ids (created empty) and who may read them: least privilege per service.
  secrets = {
    exchange-api-key    = ["trader"]
    exchange-api-secret = ["trader"]
    trader-api-token    = ["trader"]
    ledger-signing-key  = ["trader"]
    ledger-witness-key  = ["flows"]
    postgres-password   = ["trader", "mlflow"]
    redis-auth-string   = ["trader", "flows"]
  }
  # Each service with bucket access reaches GCS through its S3-compatible XML API (boto3) with an HMAC key of its
  # own service account (README.md): the key's secret goes here, readable by that service only.
  hmac_secrets = { for service in keys(local.bucket_access) : "gcs-hmac-${replace(service, "_", "-")}" => [service] }
}

data "google_project" "this" {
  project_id = var.project_id
}

module "network" {
  source = "./modules/network"

  name   = local.name
  region = var.region
}

module "kms" {
  source = "./modules/kms"

  name           = local.name
  region         = var.region
  project_number = data.google_project.this.number
  labels         = local.labels
}

module "gke" {
  source = "./modules/gke"

  name                    = local.name
  project_id              = var.project_id
  region                  = var.region
  network                 = module.network.network_id
  subnetwork              = module.network.subnetwork_id
  pods_range_name         = module.network.pods_range_name
  services_range_name     = module.network.services_range_name
  master_ipv4_cidr_block  = module.network.master_ipv4_cidr_block
  master_authorized_cidrs = var.master_authorized_cidrs
  machine_type            = coalesce(var.node_machine_type, local.env.node_machine_type)
  max_node_count          = coalesce(var.node_max_count, local.env.node_max_count)
  deletion_protection     = local.env.deletion_protection
  secrets_kms_key         = module.kms.gke_key_id
  labels                  = local.labels
}

module "postgres" {
  source = "./modules/postgres"

  name                = local.name
  region              = var.region
  network             = module.network.network_id
  tier                = coalesce(var.postgres_tier, local.env.postgres_tier)
  high_availability   = local.env.postgres_ha
  deletion_protection = local.env.deletion_protection
  databases           = ["cta", "mlflow", "prefect"]
  labels              = local.labels

  depends_on = [module.network]
}

module "redis" {
  source = "./modules/redis"

  name           = local.name
  region         = var.region
  network        = module.network.network_id
  tier           = local.env.redis_tier
  memory_size_gb = coalesce(var.redis_memory_size_gb, local.env.redis_memory_size_gb)
  labels         = local.labels

  depends_on = [module.network]
}

module "buckets" {
  source = "./modules/buckets"

  name          = "${var.project_id}-${local.name}"
  region        = var.region
  kms_key_id    = module.kms.storage_key_id
  force_destroy = local.env.force_destroy
  labels        = local.labels
}

module "registry" {
  source = "./modules/registry"

  name    = local.name
  region  = var.region
  readers = ["serviceAccount:${module.gke.node_service_account}"]
  labels  = local.labels
}

module "identity" {
  source = "./modules/identity"

  name                 = local.name
  workload_pool        = module.gke.workload_pool
  kubernetes_namespace = var.kubernetes_namespace
  services             = local.services
  buckets = {
    lake      = module.buckets.lake_bucket
    artifacts = module.buckets.artifacts_bucket
  }
  bucket_access = local.bucket_access
}

module "secrets" {
  source = "./modules/secrets"

  name_prefix = local.name
  secrets     = merge(local.secrets, local.hmac_secrets)
  accessors   = module.identity.members
  labels      = local.labels
}
