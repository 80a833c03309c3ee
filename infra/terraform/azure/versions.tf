terraform {
  required_version = ">= 1.5"
  required_providers {
    azurerm = {
      source  = "hashicorp/azurerm"
      version = "~> 4.42" # rbac_authorization_enabled (Key Vault) arrived in 4.42
    }
  }
}

provider "azurerm" {
  subscription_id = var.subscription_id
  # The storage account has shared keys disabled: the provider talks to it with Entra ID.
  storage_use_azuread = true

  features {
    key_vault {
      # Soft-deleted vaults and secrets stay recoverable (purge protection forbids purging anyway).
      purge_soft_delete_on_destroy    = false
      recover_soft_deleted_key_vaults = true
    }
    resource_group {
      prevent_deletion_if_contains_resources = true
    }
  }
}
