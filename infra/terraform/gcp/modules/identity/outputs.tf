output "emails" {
  description = "CTA service => Google service account email (the iam.gke.io/gcp-service-account annotation)"
  value       = { for k, sa in google_service_account.this : k => sa.email }
}

output "members" {
  description = "CTA service => IAM member string"
  value       = { for k, sa in google_service_account.this : k => "serviceAccount:${sa.email}" }
}
