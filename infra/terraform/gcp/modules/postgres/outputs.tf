output "private_ip" {
  description = "The instance's private IP"
  value       = google_sql_database_instance.this.private_ip_address
}

output "connection_name" {
  description = "project:region:instance"
  value       = google_sql_database_instance.this.connection_name
}

output "instance_name" {
  description = "The instance's name"
  value       = google_sql_database_instance.this.name
}
