output "secret_ids" {
  description = "Secret (short name) => Secret Manager secret id; ids only, never values"
  value       = { for k, s in google_secret_manager_secret.this : k => s.secret_id }
}
