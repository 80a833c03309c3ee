output "cluster_name" {
  description = "The cluster's name"
  value       = azurerm_kubernetes_cluster.this.name
}

output "cluster_id" {
  description = "The cluster's id"
  value       = azurerm_kubernetes_cluster.this.id
}

output "oidc_issuer_url" {
  description = "The OIDC issuer the federated identity credentials trust"
  value       = azurerm_kubernetes_cluster.this.oidc_issuer_url
}

output "kubelet_object_id" {
  description = "The kubelet identity's object id (pulls images from ACR)"
  value       = azurerm_kubernetes_cluster.this.kubelet_identity[0].object_id
}
