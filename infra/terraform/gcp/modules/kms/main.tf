# Customer-managed keys: one for the buckets (the candle lake, MLflow's artifacts) and one for GKE's
# application-layer encryption of Kubernetes Secrets. Rotated every 90 days; destroying them would make the data
# unreadable, so terraform refuses to (prevent_destroy).

resource "google_kms_key_ring" "this" {
  name     = var.name
  location = var.region
}

resource "google_kms_crypto_key" "storage" {
  name            = "${var.name}-storage"
  key_ring        = google_kms_key_ring.this.id
  rotation_period = var.rotation_period
  labels          = var.labels

  lifecycle {
    prevent_destroy = true
  }
}

resource "google_kms_crypto_key" "gke" {
  name            = "${var.name}-gke-secrets"
  key_ring        = google_kms_key_ring.this.id
  rotation_period = var.rotation_period
  labels          = var.labels

  lifecycle {
    prevent_destroy = true
  }
}

# The Cloud Storage service agent encrypts and decrypts the buckets' objects with the storage key.
data "google_storage_project_service_account" "gcs" {}

resource "google_kms_crypto_key_iam_member" "storage" {
  crypto_key_id = google_kms_crypto_key.storage.id
  role          = "roles/cloudkms.cryptoKeyEncrypterDecrypter"
  member        = "serviceAccount:${data.google_storage_project_service_account.gcs.email_address}"
}

# The GKE service agent encrypts Kubernetes Secrets in etcd with the gke key.
resource "google_kms_crypto_key_iam_member" "gke" {
  crypto_key_id = google_kms_crypto_key.gke.id
  role          = "roles/cloudkms.cryptoKeyEncrypterDecrypter"
  member        = "serviceAccount:service-${var.project_number}@container-engine-robot.iam.gserviceaccount.com"
}
