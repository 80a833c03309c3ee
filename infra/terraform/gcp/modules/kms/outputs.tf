output "storage_key_id" {
  description = "The buckets' key"
  value       = google_kms_crypto_key.storage.id
  depends_on  = [google_kms_crypto_key_iam_member.storage]
}

output "gke_key_id" {
  description = "The key GKE encrypts Kubernetes Secrets with"
  value       = google_kms_crypto_key.gke.id
  depends_on  = [google_kms_crypto_key_iam_member.gke]
}
