output "network_id" {
  description = "The VPC's id"
  value       = google_compute_network.this.id
  # Cloud SQL and Memorystore need the peering in place before they can take a private IP.
  depends_on = [google_service_networking_connection.private_services]
}

output "subnetwork_id" {
  description = "The nodes' subnet"
  value       = google_compute_subnetwork.nodes.id
}

output "pods_range_name" {
  description = "Secondary range name for pods"
  value       = "pods"
}

output "services_range_name" {
  description = "Secondary range name for services"
  value       = "services"
}

output "master_ipv4_cidr_block" {
  description = "The GKE control plane's /28"
  value       = var.master_cidr
}
