output "client_ids" {
  description = "CTA service => client id (the azure.workload.identity/client-id annotation)"
  value       = { for k, i in azurerm_user_assigned_identity.this : k => i.client_id }
}

output "principal_ids" {
  description = "CTA service => principal (object) id, for role assignments"
  value       = { for k, i in azurerm_user_assigned_identity.this : k => i.principal_id }
}
