output "repository_id" {
  description = "The repository's id"
  value       = google_artifact_registry_repository.this.id
}

output "url" {
  description = "<region>-docker.pkg.dev/<project>/<repository>"
  value       = "${google_artifact_registry_repository.this.location}-docker.pkg.dev/${google_artifact_registry_repository.this.project}/${google_artifact_registry_repository.this.repository_id}"
}
