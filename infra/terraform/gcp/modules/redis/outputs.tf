output "host" {
  description = "The instance's private IP"
  value       = google_redis_instance.this.host
}

output "port" {
  description = "The instance's port"
  value       = google_redis_instance.this.port
}
