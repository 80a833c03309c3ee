output "cluster_name" {
  description = "The cluster's name"
  value       = google_container_cluster.this.name
}

output "workload_pool" {
  description = "The Workload Identity pool (<project>.svc.id.goog)"
  value       = google_container_cluster.this.workload_identity_config[0].workload_pool
}

output "node_service_account" {
  description = "The nodes' Google service account (pulls images from Artifact Registry)"
  value       = google_service_account.nodes.email
}
