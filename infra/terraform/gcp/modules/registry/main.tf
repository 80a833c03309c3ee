# A Docker repository in Artifact Registry for CTA's images (runtime, flows): tags are immutable, untagged images are
# cleaned up, the most recent keep_versions of each image are kept. Only the GKE nodes may pull; CI pushes with its
# own identity (roles/artifactregistry.writer, granted outside this configuration).

resource "google_artifact_registry_repository" "this" {
  #checkov:skip=CKV_GCP_84:images are built from the public repository and hold no secrets; Google-managed encryption suffices and a CMEK needs the Artifact Registry service agent, which exists only after first use
  repository_id = var.name
  location      = var.region
  format        = "DOCKER"
  description   = "CTA images (runtime, flows)"
  labels        = var.labels

  docker_config {
    immutable_tags = true
  }

  cleanup_policy_dry_run = false

  cleanup_policies {
    id     = "delete-untagged"
    action = "DELETE"
    condition {
      tag_state  = "UNTAGGED"
      older_than = "604800s"
    }
  }

  cleanup_policies {
    id     = "keep-recent"
    action = "KEEP"
    most_recent_versions {
      keep_count = var.keep_versions
    }
  }
}

resource "google_artifact_registry_repository_iam_member" "readers" {
  for_each = toset(var.readers)

  repository = google_artifact_registry_repository.this.name
  location   = google_artifact_registry_repository.this.location
  role       = "roles/artifactregistry.reader"
  member     = each.value
}
