output "lake_bucket" {
  description = "The candle lake's bucket"
  value       = google_storage_bucket.this["lake"].name
}

output "artifacts_bucket" {
  description = "MLflow's artifact bucket"
  value       = google_storage_bucket.this["artifacts"].name
}
