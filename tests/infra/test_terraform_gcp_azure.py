"""The Google Cloud and Azure terraform (infra/terraform/gcp, infra/terraform/azure).

Neither the google nor the azurerm provider is on this machine, so `terraform validate`/`plan` cannot run: what runs
is `terraform fmt -check` (no provider needed), a structural check of every .tf file parsed with python-hcl2 (the
security settings, the module wiring: sources, variables, outputs; the provider pins; no secret values) and checkov.
"""

from __future__ import annotations

import functools
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hcl2
import pytest

from tests.infra.conftest import CHECKOV_ENV, INFRA, run_tool

CLOUDS = {"gcp": INFRA / "terraform" / "gcp", "azure": INFRA / "terraform" / "azure"}
MODULES = {
    "gcp": {"network", "kms", "gke", "postgres", "redis", "buckets", "registry", "secrets", "identity"},
    "azure": {"network", "aks", "postgres", "redis", "storage", "registry", "keyvault", "identity"},
}
PROVIDERS = {"gcp": ("google", "hashicorp/google", "~> 6."), "azure": ("azurerm", "hashicorp/azurerm", "~> 4.")}
SERVICES = {"trader", "flows", "mlflow", "prefect_worker"}
# Outputs the Kubernetes overlays and the operators read, per cloud.
ROOT_OUTPUTS = {"postgres_host", "redis_host", "lake_bucket", "artifacts_bucket", "registry_url", "cluster_name"}
IDENTITY_OUTPUT = {"gcp": "service_accounts", "azure": "workload_identity_client_ids"}
META_ARGUMENTS = {"source", "version", "providers", "depends_on", "count", "for_each"}
# Resources whose very existence would put a secret value into the configuration or the state.
SECRET_RESOURCES = {
    "google_secret_manager_secret_version",
    "google_storage_hmac_key",
    "google_service_account_key",
    "google_sql_user",
    "azurerm_key_vault_secret",
    "azurerm_key_vault_key",
    "random_password",
    "tls_private_key",
}
SECRET_ATTRIBUTES = re.compile(
    r"\.(auth_string|primary_access_key|secondary_access_key|primary_connection_string|secret_data|password|"
    r"administrator_password|admin_password|private_key|kube_config|kube_admin_config|client_key)\b"
)
SECRETISH_NAME = re.compile(r"password|secret|token|private_key|(api|access|signing|witness)_?key", re.IGNORECASE)
AZURE_TAGGED = {
    "azurerm_resource_group",
    "azurerm_log_analytics_workspace",
    "azurerm_virtual_network",
    "azurerm_network_security_group",
    "azurerm_private_dns_zone",
    "azurerm_private_dns_zone_virtual_network_link",
    "azurerm_kubernetes_cluster",
    "azurerm_kubernetes_cluster_node_pool",
    "azurerm_postgresql_flexible_server",
    "azurerm_redis_cache",
    "azurerm_private_endpoint",
    "azurerm_storage_account",
    "azurerm_container_registry",
    "azurerm_key_vault",
    "azurerm_user_assigned_identity",
}
HCL_OPTIONS = hcl2.SerializationOptions(strip_string_quotes=True, explicit_blocks=False, with_comments=False)


@dataclass(frozen=True)
class Module:
    """One terraform module directory, every .tf file parsed and merged by block kind."""

    path: Path
    blocks: dict[str, list[dict[str, Any]]]
    text: str  # the raw .tf sources, for the checkov skip comments

    def named(self, kind: str) -> dict[str, Any]:
        """variable/output/module blocks: name => body."""
        return {name: body for block in self.blocks.get(kind, []) for name, body in block.items()}

    def resources(self, rtype: str) -> dict[str, dict[str, Any]]:
        return {name: body for block in self.blocks.get("resource", []) for name, body in block.get(rtype, {}).items()}

    def resource_types(self) -> set[str]:
        return {rtype for block in self.blocks.get("resource", []) for rtype in block}

    def the(self, rtype: str) -> dict[str, Any]:
        found = self.resources(rtype)
        assert len(found) == 1, f"{self.path}: expected exactly one {rtype}, found {sorted(found)}"
        return next(iter(found.values()))

    def locals(self) -> dict[str, Any]:
        return {k: v for block in self.blocks.get("locals", []) for k, v in block.items()}

    def expressions(self) -> str:
        """Every value of the module as one string: what the reference checks search."""
        return json.dumps(self.blocks)


@functools.cache
def load(path: Path) -> Module:
    blocks: dict[str, list[dict[str, Any]]] = {}
    texts = []
    files = sorted(path.glob("*.tf"))
    assert files, f"no .tf files in {path}"
    for tf in files:
        text = tf.read_text()
        texts.append(text)
        for kind, entries in hcl2.loads(text, serialization_options=HCL_OPTIONS).items():
            blocks.setdefault(kind, []).extend(entries)
    return Module(path=path, blocks=blocks, text="\n".join(texts))


def module_dirs(cloud: str) -> list[Path]:
    return [CLOUDS[cloud], *sorted(p for p in (CLOUDS[cloud] / "modules").iterdir() if p.is_dir())]


def block(body: dict[str, Any], *path: str) -> dict[str, Any]:
    """The (single) nested block at path, e.g. block(cluster, "private_cluster_config")."""
    for name in path:
        value = body.get(name)
        assert isinstance(value, list) and value, f"missing block {name!r} (path {path})"
        assert len(value) == 1, f"block {name!r} appears {len(value)} times"
        body = value[0]
    return body


def dynamic(body: dict[str, Any], name: str) -> dict[str, Any]:
    """The dynamic block `name` of a resource: {"for_each": ..., "content": [...]}."""
    found = [d[name] for d in body.get("dynamic", []) if name in d]
    assert len(found) == 1, f"expected one dynamic {name!r} block"
    return found[0]


def root(cloud: str) -> Module:
    return load(CLOUDS[cloud])


def sub(cloud: str, name: str) -> Module:
    return load(CLOUDS[cloud] / "modules" / name)


# ----- formatting ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cloud", sorted(CLOUDS))
def test_terraform_fmt_check(cloud: str, terraform_env: dict[str, str]) -> None:
    run_tool(["terraform", "fmt", "-check", "-recursive", "-diff", CLOUDS[cloud]], env=terraform_env, timeout=120)


# ----- layout, pins, variables, wiring -------------------------------------------------------------------------------


@pytest.mark.parametrize("cloud", sorted(CLOUDS))
def test_layout_and_readme(cloud: str) -> None:
    found = {p.name for p in (CLOUDS[cloud] / "modules").iterdir() if p.is_dir()}
    assert found == MODULES[cloud]
    for directory in module_dirs(cloud):
        for name in ("main.tf", "variables.tf", "outputs.tf"):
            assert (directory / name).is_file(), f"{directory}/{name} is missing"
    readme = (CLOUDS[cloud] / "README.md").read_text()
    for needed in ("terraform init", "terraform apply", "validate", "plan", "offline", "checkov"):
        assert needed in readme, f"{cloud}/README.md does not mention {needed!r}"
    assert ("gcloud container clusters get-credentials" if cloud == "gcp" else "az aks get-credentials") in readme


@pytest.mark.parametrize("cloud", sorted(CLOUDS))
def test_provider_pinned(cloud: str) -> None:
    name, source, version_prefix = PROVIDERS[cloud]
    terraform = block(root(cloud).blocks, "terraform")
    assert terraform["required_version"].startswith(">=")
    provider = block(terraform, "required_providers")[name]
    assert provider["source"] == source
    assert provider["version"].startswith(version_prefix), provider["version"]
    # The modules inherit the root's provider: none configures or pins another.
    for directory in module_dirs(cloud)[1:]:
        assert "provider" not in load(directory).blocks, f"{directory} configures a provider"


@pytest.mark.parametrize("cloud", sorted(CLOUDS))
def test_environment_and_prefix_validated(cloud: str) -> None:
    variables = root(cloud).named("variable")
    assert ("region" if cloud == "gcp" else "location") in variables
    condition = block(variables["environment"], "validation")["condition"]
    assert '"dev"' in condition and '"prod"' in condition and "var.environment" in condition
    assert "var.name_prefix" in block(variables["name_prefix"], "validation")["condition"]
    defaults = root(cloud).locals()["defaults"]
    assert set(defaults) == {"dev", "prod"}
    assert set(defaults["dev"]) == set(defaults["prod"]), "dev and prod must size the same things"
    assert root(cloud).locals()["env"] == (
        '${var.environment == "prod" ? local.defaults["prod"] : local.defaults["dev"]}'
    )


@pytest.mark.parametrize("cloud", sorted(CLOUDS))
def test_every_variable_typed_and_described(cloud: str) -> None:
    for directory in module_dirs(cloud):
        for name, body in load(directory).named("variable").items():
            assert body.get("type"), f"{directory}: variable {name} has no type"
            assert body.get("description"), f"{directory}: variable {name} has no description"
        for name, body in load(directory).named("output").items():
            assert body.get("description"), f"{directory}: output {name} has no description"


@pytest.mark.parametrize("cloud", sorted(CLOUDS))
def test_module_calls_match_the_modules(cloud: str) -> None:
    top = root(cloud)
    calls = top.named("module")
    assert set(calls) == MODULES[cloud], "every local module is called exactly once"
    for call_name, call in calls.items():
        source = (CLOUDS[cloud] / call["source"]).resolve()
        assert call["source"].startswith("./modules/") and source.is_dir(), f"{call_name}: bad source {call['source']}"
        declared = load(source).named("variable")
        passed = set(call) - META_ARGUMENTS
        assert passed <= set(declared), f"module.{call_name} passes undeclared {sorted(passed - set(declared))}"
        required = {name for name, body in declared.items() if "default" not in body}
        assert required <= passed, f"module.{call_name} misses required {sorted(required - passed)}"
    # Every module.X.Y referenced anywhere in the root (arguments, locals, outputs) is an output of module X.
    references = set(re.findall(r"\bmodule\.(\w+)\.(\w+)", top.expressions()))
    assert references, "the root refers to no module output"
    for module_name, output in references:
        assert module_name in calls, f"module.{module_name} is referenced but not called"
        outputs = load((CLOUDS[cloud] / calls[module_name]["source"]).resolve()).named("output")
        assert output in outputs, f"module.{module_name}.{output} is not an output of {module_name}"


@pytest.mark.parametrize("cloud", sorted(CLOUDS))
def test_every_var_reference_is_declared(cloud: str) -> None:
    for directory in module_dirs(cloud):
        module = load(directory)
        used = set(re.findall(r"\bvar\.([A-Za-z_]\w*)", module.expressions()))
        declared = set(module.named("variable"))
        assert used <= declared, f"{directory}: var.{sorted(used - declared)} not declared"
        unused = declared - used
        assert not unused, f"{directory}: variables declared but never used: {sorted(unused)}"
        local_refs = set(re.findall(r"\blocal\.([A-Za-z_]\w*)", module.expressions()))
        assert local_refs <= set(module.locals()), f"{directory}: local.{sorted(local_refs - set(module.locals()))}"


@pytest.mark.parametrize("cloud", sorted(CLOUDS))
def test_root_outputs_for_the_overlays(cloud: str) -> None:
    outputs = root(cloud).named("output")
    assert ROOT_OUTPUTS | {IDENTITY_OUTPUT[cloud]} <= set(outputs)
    assert set(root(cloud).locals()["services"]) == SERVICES
    # The per-service identities come from the identity module, keyed by the service names above.
    assert outputs[IDENTITY_OUTPUT[cloud]]["value"].startswith("${module.identity.")


# ----- secrets ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cloud", sorted(CLOUDS))
def test_no_secret_values_anywhere(cloud: str) -> None:
    for directory in module_dirs(cloud):
        module = load(directory)
        assert not module.resource_types() & SECRET_RESOURCES, f"{directory} creates a secret value"
        for name, body in module.named("variable").items():
            default = body.get("default")
            if SECRETISH_NAME.search(name):
                assert default in (None, "", [], {}, False), f"{directory}: variable {name} has a secret-like default"
            assert not body.get("sensitive"), f"{directory}: sensitive variable {name}: secrets never go through tf"
        for name, body in module.named("output").items():
            value = json.dumps(body["value"])
            assert not SECRET_ATTRIBUTES.search(value), f"{directory}: output {name} exposes a secret: {value}"
            assert not body.get("sensitive"), f"{directory}: output {name} is sensitive: outputs are names/ids only"
        # No resource argument carries a password.
        assert not re.search(r'"(administrator_)?password(_wo)?":', module.expressions()), directory


def test_gcp_secrets_are_empty_and_least_privilege() -> None:
    secrets = sub("gcp", "secrets")
    secret = secrets.the("google_secret_manager_secret")
    assert secret["for_each"] == "${var.secrets}"
    assert "replication" in secret
    access = secrets.the("google_secret_manager_secret_iam_member")
    assert access["role"] == "roles/secretmanager.secretAccessor"
    wanted = root("gcp").locals()["secrets"]
    for name in ("exchange-api-key", "exchange-api-secret", "trader-api-token", "ledger-signing-key"):
        assert wanted[name] == ["trader"], name
    assert "ledger-witness-key" in wanted
    assert all(set(services) <= SERVICES for services in wanted.values())
    assert root("gcp").named("output")["secret_ids"]["value"] == "${module.secrets.secret_ids}"


def test_azure_key_vault_holds_no_terraform_secrets() -> None:
    vault = sub("azure", "keyvault")
    readers = vault.resources("azurerm_role_assignment")["readers"]
    assert readers["role_definition_name"] == "Key Vault Secrets User"
    # Scoped to one secret, never the whole vault.
    assert readers["scope"].endswith("/secrets/${each.value.secret}")
    wanted = root("azure").locals()["secrets"]
    assert wanted["exchange-api-key"] == ["trader"] and "ledger-witness-key" in wanted
    assert all(set(services) <= SERVICES for services in wanted.values())


# ----- Google Cloud -------------------------------------------------------------------------------------------------


def test_gcp_gke_private_workload_identity_cluster() -> None:
    gke = sub("gcp", "gke")
    cluster = gke.the("google_container_cluster")
    assert block(cluster, "workload_identity_config")["workload_pool"] == "${var.project_id}.svc.id.goog"
    private = block(cluster, "private_cluster_config")
    assert private["enable_private_nodes"] is True and private["enable_private_endpoint"] is True
    assert block(cluster, "network_policy")["enabled"] is True
    assert block(cluster, "addons_config", "network_policy_config")["disabled"] is False
    assert block(cluster, "release_channel")["channel"] in {"REGULAR", "STABLE"}
    assert block(cluster, "database_encryption")["state"] == "ENCRYPTED"
    assert block(cluster, "master_auth", "client_certificate_config")["issue_client_certificate"] is False
    assert cluster["enable_legacy_abac"] is False and cluster["enable_shielded_nodes"] is True
    assert cluster["deletion_protection"] == "${var.deletion_protection}"
    assert "var.labels" in cluster["resource_labels"]
    authorized = dynamic(block(cluster, "master_authorized_networks_config"), "cidr_blocks")
    assert authorized["for_each"] == "${var.master_authorized_cidrs}"
    pool = gke.the("google_container_node_pool")
    management = block(pool, "management")
    assert management["auto_upgrade"] is True and management["auto_repair"] is True
    node = block(pool, "node_config")
    assert block(node, "workload_metadata_config")["mode"] == "GKE_METADATA"
    shielded = block(node, "shielded_instance_config")
    assert shielded["enable_secure_boot"] is True and shielded["enable_integrity_monitoring"] is True
    assert node["service_account"] == "${google_service_account.nodes.email}"
    # The master_authorized_cidrs variable refuses 0.0.0.0/0.
    assert '"0.0.0.0/0"' in block(root("gcp").named("variable")["master_authorized_cidrs"], "validation")["condition"]


def test_gcp_cloud_sql_private_tls_backups() -> None:
    sql = sub("gcp", "postgres")
    instance = sql.the("google_sql_database_instance")
    assert instance["database_version"].startswith("POSTGRES_")
    assert instance["deletion_protection"] == "${var.deletion_protection}"
    settings = block(instance, "settings")
    ip = block(settings, "ip_configuration")
    assert ip["ipv4_enabled"] is False
    assert ip["ssl_mode"] in {"ENCRYPTED_ONLY", "TRUSTED_CLIENT_CERTIFICATE_REQUIRED"}
    assert "authorized_networks" not in ip
    backup = block(settings, "backup_configuration")
    assert backup["enabled"] is True
    assert backup["point_in_time_recovery_enabled"] == "${var.high_availability}"
    assert settings["availability_type"] == '${var.high_availability ? "REGIONAL" : "ZONAL"}'
    flags = {f["name"]: f["value"] for f in settings["database_flags"]}
    assert flags["log_connections"] == "on" and flags["cloudsql.enable_pgaudit"] == "on"
    assert sql.the("google_sql_database")["for_each"] == "${toset(var.databases)}"
    # prod: HA, PITR and deletion protection; dev: none of them.
    defaults = root("gcp").locals()["defaults"]
    assert defaults["prod"]["postgres_ha"] is True and defaults["prod"]["deletion_protection"] is True
    assert defaults["dev"]["postgres_ha"] is False and defaults["dev"]["deletion_protection"] is False
    call = root("gcp").named("module")["postgres"]
    assert call["deletion_protection"] == "${local.env.deletion_protection}"
    assert call["high_availability"] == "${local.env.postgres_ha}"
    assert call["databases"] == ["cta", "mlflow", "prefect"]


def test_gcp_memorystore_auth_and_tls() -> None:
    redis = sub("gcp", "redis").the("google_redis_instance")
    assert redis["auth_enabled"] is True
    assert redis["transit_encryption_mode"] == "SERVER_AUTHENTICATION"
    assert redis["connect_mode"] == "PRIVATE_SERVICE_ACCESS"
    assert root("gcp").locals()["defaults"]["prod"]["redis_tier"] == "STANDARD_HA"


def test_gcp_buckets_private_versioned_cmek() -> None:
    buckets = sub("gcp", "buckets").resources("google_storage_bucket")
    assert set(buckets) == {"this", "logs"}
    assert sub("gcp", "buckets").locals()["buckets"] == {
        "lake": "${var.name}-lake",
        "artifacts": "${var.name}-artifacts",
    }
    for name, bucket in buckets.items():
        assert bucket["public_access_prevention"] == "enforced", name
        assert bucket["uniform_bucket_level_access"] is True, name
        assert block(bucket, "versioning")["enabled"] is True, name
        assert block(bucket, "encryption")["default_kms_key_name"] == "${var.kms_key_id}", name
    keys = sub("gcp", "kms").resources("google_kms_crypto_key")
    for name, key in keys.items():
        assert key["rotation_period"] == "${var.rotation_period}", name
        assert block(key, "lifecycle")["prevent_destroy"] is True, name


def test_gcp_registry_and_workload_identity() -> None:
    repository = sub("gcp", "registry").the("google_artifact_registry_repository")
    assert repository["format"] == "DOCKER"
    assert block(repository, "docker_config")["immutable_tags"] is True
    identity = sub("gcp", "identity")
    assert identity.the("google_service_account")["for_each"] == "${var.services}"
    binding = identity.the("google_service_account_iam_member")
    assert binding["role"] == "roles/iam.workloadIdentityUser"
    assert binding["member"] == "serviceAccount:${var.workload_pool}[${var.kubernetes_namespace}/${each.value}]"
    assert root("gcp").named("module")["identity"]["workload_pool"] == "${module.gke.workload_pool}"
    # Least privilege on the buckets: object roles only, per service and bucket; MLflow alone has the artifacts.
    access = root("gcp").locals()["bucket_access"]
    assert set(access) <= SERVICES
    roles = {role for buckets in access.values() for role in buckets.values()}
    assert roles <= {"roles/storage.objectViewer", "roles/storage.objectUser"}
    assert [s for s, buckets in access.items() if "artifacts" in buckets] == ["mlflow"]
    assert "prefect_worker" not in access, "the Prefect worker only starts jobs: no data access"
    assert identity.the("google_storage_bucket_iam_member")["bucket"] == "${var.buckets[each.value.bucket]}"


def test_gcp_network_has_no_public_database_paths() -> None:
    network = sub("gcp", "network")
    assert network.the("google_compute_global_address")["purpose"] == "VPC_PEERING"
    assert network.the("google_service_networking_connection")["service"] == "servicenetworking.googleapis.com"
    subnet = network.the("google_compute_subnetwork")
    assert subnet["private_ip_google_access"] is True
    assert {r["range_name"] for r in subnet["secondary_ip_range"]} == {"pods", "services"}


# ----- Azure --------------------------------------------------------------------------------------------------------


def test_azure_aks_private_workload_identity_cluster() -> None:
    aks = sub("azure", "aks")
    cluster = aks.the("azurerm_kubernetes_cluster")
    assert cluster["oidc_issuer_enabled"] is True and cluster["workload_identity_enabled"] is True
    assert cluster["private_cluster_enabled"] is True
    assert cluster["local_account_disabled"] is True
    assert block(cluster, "azure_active_directory_role_based_access_control")["azure_rbac_enabled"] is True
    assert block(cluster, "network_profile")["network_policy"] in {"calico", "azure", "cilium"}
    assert cluster["automatic_upgrade_channel"] in {"patch", "stable", "rapid", "node-image"}
    assert cluster["azure_policy_enabled"] is True
    assert block(cluster, "key_vault_secrets_provider")["secret_rotation_enabled"] is True
    system = block(cluster, "default_node_pool")
    pool = aks.the("azurerm_kubernetes_cluster_node_pool")
    for nodes in (system, pool):
        assert nodes["host_encryption_enabled"] is True and nodes["os_disk_type"] == "Ephemeral"
        assert nodes["vnet_subnet_id"] == "${var.subnet_id}"
        assert nodes["max_pods"] >= 50
    assert system["only_critical_addons_enabled"] is True


def test_azure_postgres_flexible_server_private() -> None:
    pg = sub("azure", "postgres")
    server = pg.the("azurerm_postgresql_flexible_server")
    assert server["public_network_access_enabled"] is False
    assert server["delegated_subnet_id"] == "${var.delegated_subnet_id}"
    assert server["private_dns_zone_id"] == "${var.private_dns_zone_id}"
    auth = block(server, "authentication")
    assert auth["password_auth_enabled"] is False and auth["active_directory_auth_enabled"] is True
    assert "administrator_password" not in server and "administrator_login" not in server
    assert server["geo_redundant_backup_enabled"] is True
    high_availability = dynamic(server, "high_availability")
    assert high_availability["for_each"] == "${var.high_availability ? [1] : []}"
    assert high_availability["content"][0]["mode"] == "ZoneRedundant"
    config = pg.the("azurerm_postgresql_flexible_server_configuration")["for_each"]
    assert config["require_secure_transport"] == "on" and config["ssl_min_protocol_version"] == "TLSv1.2"
    assert pg.the("azurerm_postgresql_flexible_server_database")["for_each"] == "${toset(var.databases)}"
    delegation = block(sub("azure", "network").resources("azurerm_subnet")["postgres"], "delegation")
    assert block(delegation, "service_delegation")["name"] == "Microsoft.DBforPostgreSQL/flexibleServers"
    defaults = root("azure").locals()["defaults"]
    assert defaults["prod"]["postgres_ha"] is True and defaults["dev"]["postgres_ha"] is False
    assert root("azure").named("module")["postgres"]["databases"] == ["cta", "mlflow", "prefect"]


def test_azure_redis_tls_only_private() -> None:
    redis = sub("azure", "redis")
    cache = redis.the("azurerm_redis_cache")
    assert cache["non_ssl_port_enabled"] is False
    assert cache["minimum_tls_version"] == "1.2"
    assert cache["public_network_access_enabled"] is False
    endpoint = block(redis.the("azurerm_private_endpoint"), "private_service_connection")
    assert endpoint["subresource_names"] == ["redisCache"]


def test_azure_storage_account_locked_down() -> None:
    storage = sub("azure", "storage")
    account = storage.the("azurerm_storage_account")
    assert account["min_tls_version"] == "TLS1_2"
    assert account["allow_nested_items_to_be_public"] is False
    assert account["public_network_access_enabled"] is False
    assert account["shared_access_key_enabled"] is False
    assert account["https_traffic_only_enabled"] is True
    assert account["infrastructure_encryption_enabled"] is True
    assert block(account, "network_rules")["default_action"] == "Deny"
    blobs = block(account, "blob_properties")
    assert blobs["versioning_enabled"] is True
    assert block(blobs, "delete_retention_policy")["days"] == "${var.retention_days}"
    container = storage.the("azurerm_storage_container")
    assert container["container_access_type"] == "private"
    assert root("azure").named("module")["storage"]["containers"] == ["lake", "artifacts"]
    # Shared keys are off, so the provider must use Entra ID for the storage data plane.
    assert block(root("azure").blocks, "provider")["azurerm"]["storage_use_azuread"] is True


def test_azure_registry_and_key_vault() -> None:
    acr = sub("azure", "registry").the("azurerm_container_registry")
    assert acr["admin_enabled"] is False
    assert acr["public_network_access_enabled"] is False
    assert acr["anonymous_pull_enabled"] is False
    assert sub("azure", "registry").the("azurerm_role_assignment")["role_definition_name"] == "AcrPull"
    vault = sub("azure", "keyvault").the("azurerm_key_vault")
    assert vault["purge_protection_enabled"] is True
    assert vault["soft_delete_retention_days"] >= 7
    assert vault["rbac_authorization_enabled"] is True
    assert vault["public_network_access_enabled"] == "${length(var.operator_ip_ranges) > 0}"
    assert block(vault, "network_acls")["default_action"] == "Deny"
    assert "0.0.0.0/0" in block(root("azure").named("variable")["operator_ip_ranges"], "validation")["condition"]


def test_azure_workload_identity_federation() -> None:
    identity = sub("azure", "identity")
    assert identity.the("azurerm_user_assigned_identity")["for_each"] == "${var.services}"
    federated = identity.the("azurerm_federated_identity_credential")
    assert federated["issuer"] == "${var.oidc_issuer_url}"
    assert federated["subject"] == "system:serviceaccount:${var.kubernetes_namespace}:${each.value}"
    assert federated["audience"] == ["api://AzureADTokenExchange"]
    assert root("azure").named("module")["identity"]["oidc_issuer_url"] == "${module.aks.oidc_issuer_url}"
    grant = identity.the("azurerm_role_assignment")
    assert grant["scope"] == "${var.container_ids[each.value.container]}"
    assert sub("azure", "storage").named("output")["container_ids"]["value"].count("/blobServices/default/containers/")
    access = root("azure").locals()["container_access"]
    assert set(access) <= SERVICES
    roles = {role for containers in access.values() for role in containers.values()}
    assert roles <= {"Storage Blob Data Reader", "Storage Blob Data Contributor"}
    assert [s for s, containers in access.items() if "artifacts" in containers] == ["mlflow"]
    assert "prefect_worker" not in access, "the Prefect worker only starts jobs: no data access"


def test_tags_and_labels_everywhere() -> None:
    for directory in module_dirs("azure"):
        module = load(directory)
        for rtype in module.resource_types() & AZURE_TAGGED:
            for name, body in module.resources(rtype).items():
                assert "tags" in body, f"{directory}: {rtype}.{name} has no tags"
    labelled = {
        "google_container_node_pool": lambda b: block(b, "node_config")["resource_labels"],
        "google_sql_database_instance": lambda b: block(b, "settings")["user_labels"],
        "google_redis_instance": lambda b: b["labels"],
        "google_storage_bucket": lambda b: b["labels"],
        "google_artifact_registry_repository": lambda b: b["labels"],
        "google_secret_manager_secret": lambda b: b["labels"],
        "google_kms_crypto_key": lambda b: b["labels"],
    }
    seen = set()
    for directory in module_dirs("gcp"):
        module = load(directory)
        for rtype in module.resource_types() & set(labelled):
            for name, body in module.resources(rtype).items():
                assert "var.labels" in labelled[rtype](body), f"{directory}: {rtype}.{name} has no labels"
                seen.add(rtype)
    assert seen == set(labelled)


# ----- checkov ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cloud", sorted(CLOUDS))
def test_checkov_skips_are_justified(cloud: str) -> None:
    skips = []
    for directory in module_dirs(cloud):
        for line in load(directory).text.splitlines():
            if "checkov:skip" in line:
                match = re.fullmatch(r"\s*#checkov:skip=(CKV2?_[A-Z]+_\d+):(.+)", line)
                assert match, f"{directory}: malformed skip {line!r}"
                assert len(match.group(2).split()) >= 6, f"{directory}: skip without a real reason: {line!r}"
                skips.append(match.group(1))
    assert skips, "no skips found: the pattern no longer matches the files"


@pytest.mark.slow
@pytest.mark.parametrize("cloud", sorted(CLOUDS))
def test_checkov_clean(cloud: str, checkov: Path) -> None:
    result = run_tool(
        [checkov, "--framework", "terraform", "-d", CLOUDS[cloud], "--quiet", "--compact"],
        env={**os.environ, **CHECKOV_ENV},
        timeout=600,
    )
    summary = re.search(r"Passed checks: (\d+), Failed checks: (\d+), Skipped checks: (\d+)", result.stdout)
    assert summary, result.stdout
    passed, failed, _skipped = map(int, summary.groups())
    assert failed == 0 and passed > 50, result.stdout
