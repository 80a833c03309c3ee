# One Google service account per CTA service, impersonable only by that service's Kubernetes service account
# (Workload Identity: roles/iam.workloadIdentityUser for serviceAccount:<pool>[<namespace>/<ksa>]), with bucket
# roles on exactly the buckets it uses. No keys are created: pods get short-lived tokens from the GKE metadata server.

locals {
  bucket_grants = merge([
    for service, buckets in var.bucket_access : {
      for bucket, role in buckets : "${service}/${bucket}" => { service = service, bucket = bucket, role = role }
    }
  ]...)
}

resource "google_service_account" "this" {
  for_each = var.services

  # account_id: 6-30 characters; "cta-prod-prefect-worker" fits
  account_id   = substr(replace("${var.name}-${each.key}", "_", "-"), 0, 30)
  display_name = "CTA ${each.key} (${var.name})"
  description  = "Workload Identity for ${var.kubernetes_namespace}/${each.value}"
}

resource "google_service_account_iam_member" "workload_identity" {
  for_each = var.services

  service_account_id = google_service_account.this[each.key].name
  role               = "roles/iam.workloadIdentityUser"
  member             = "serviceAccount:${var.workload_pool}[${var.kubernetes_namespace}/${each.value}]"
}

resource "google_storage_bucket_iam_member" "this" {
  for_each = local.bucket_grants

  bucket = var.buckets[each.value.bucket]
  role   = each.value.role
  member = "serviceAccount:${google_service_account.this[each.value.service].email}"
}
