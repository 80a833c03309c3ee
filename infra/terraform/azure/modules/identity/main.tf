# One user-assigned identity per CTA service, federated with that service's Kubernetes service account only
# (issuer: the cluster's OIDC issuer, subject system:serviceaccount:<namespace>/<ksa>), with blob data roles scoped
# to exactly the containers it uses. Pods labelled azure.workload.identity/use=true whose service account carries
# azure.workload.identity/client-id get tokens for it; no secret is involved.

locals {
  container_grants = merge([
    for service, containers in var.container_access : {
      for container, role in containers : "${service}/${container}" => { service = service, container = container, role = role }
    }
  ]...)
}

resource "azurerm_user_assigned_identity" "this" {
  for_each = var.services

  name                = "${var.name}-${replace(each.key, "_", "-")}"
  location            = var.location
  resource_group_name = var.resource_group_name
  tags                = var.tags
}

resource "azurerm_federated_identity_credential" "this" {
  for_each = var.services

  name                = "${var.name}-${replace(each.key, "_", "-")}-aks"
  resource_group_name = var.resource_group_name
  parent_id           = azurerm_user_assigned_identity.this[each.key].id
  audience            = ["api://AzureADTokenExchange"]
  issuer              = var.oidc_issuer_url
  subject             = "system:serviceaccount:${var.kubernetes_namespace}:${each.value}"
}

resource "azurerm_role_assignment" "containers" {
  for_each = local.container_grants

  scope                            = var.container_ids[each.value.container]
  role_definition_name             = each.value.role
  principal_id                     = azurerm_user_assigned_identity.this[each.value.service].principal_id
  skip_service_principal_aad_check = true
}
