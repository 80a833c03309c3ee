# Secret Manager secrets, created EMPTY: terraform manages the secret (name, replication, who may read it), never a
# version, so no secret value is ever in the configuration or the state. Operators add the values:
#   printf '%s' "$VALUE" | gcloud secrets versions add <id> --data-file=-
# Each service gets roles/secretmanager.secretAccessor on exactly the secrets it needs.

locals {
  grants = merge([
    for secret, services in var.secrets : {
      for service in services : "${secret}/${service}" => { secret = secret, service = service }
    }
  ]...)
}

resource "google_secret_manager_secret" "this" {
  for_each = var.secrets

  secret_id = "${var.name_prefix}-${each.key}"
  labels    = var.labels

  replication {
    auto {}
  }
}

resource "google_secret_manager_secret_iam_member" "accessors" {
  for_each = local.grants

  secret_id = google_secret_manager_secret.this[each.value.secret].id
  role      = "roles/secretmanager.secretAccessor"
  member    = var.accessors[each.value.service]
}
