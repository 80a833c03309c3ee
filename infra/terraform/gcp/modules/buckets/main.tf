# The candle lake (candles/ and quarantine/) and MLflow's artifact store: uniform bucket-level access (IAM only, no
# ACLs), public access prevention enforced, versioning (old versions expire after noncurrent_version_days), objects
# encrypted with the CMEK, access logs in a third bucket.

locals {
  buckets = {
    lake      = "${var.name}-lake"
    artifacts = "${var.name}-artifacts"
  }
}

resource "google_storage_bucket" "logs" {
  name                        = "${var.name}-access-logs"
  location                    = var.region
  force_destroy               = var.force_destroy
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  labels                      = var.labels

  versioning {
    enabled = true
  }

  encryption {
    default_kms_key_name = var.kms_key_id
  }

  lifecycle_rule {
    condition {
      age = 365
    }
    action {
      type = "Delete"
    }
  }

  #checkov:skip=CKV_GCP_62:this is the access-log bucket itself; logging it into itself would loop
}

# Cloud Storage writes the usage logs as this group (required with uniform bucket-level access).
resource "google_storage_bucket_iam_member" "log_writer" {
  bucket = google_storage_bucket.logs.name
  role   = "roles/storage.objectCreator"
  member = "group:cloud-storage-analytics@google.com"
}

resource "google_storage_bucket" "this" {
  for_each = local.buckets

  name                        = each.value
  location                    = var.region
  force_destroy               = var.force_destroy
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  labels                      = merge(var.labels, { purpose = each.key })

  versioning {
    enabled = true
  }

  encryption {
    default_kms_key_name = var.kms_key_id
  }

  logging {
    log_bucket = google_storage_bucket.logs.name
  }

  lifecycle_rule {
    condition {
      days_since_noncurrent_time = var.noncurrent_version_days
      with_state                 = "ARCHIVED"
    }
    action {
      type = "Delete"
    }
  }
}
