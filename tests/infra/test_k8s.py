"""The Kubernetes manifests (infra/k8s): every overlay renders with kustomize, validates strictly against the
Kubernetes API schemas, passes checkov, and keeps the rules the deployment depends on (one trader, hardened pods,
secrets by reference only, default-deny networking, flow runs in the flows image, compose's settings).

Nothing here talks to a cluster: the rendered manifests are the contract. Each overlay is rendered once per session."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.infra.conftest import CHECKOV_ENV, REPO_ROOT, run_tool

K8S = REPO_ROOT / "infra" / "k8s"
OVERLAYS = ("dev", "aws", "gcp", "azure")
CLOUDS = ("aws", "gcp", "azure")
# The schema versions the overlays must validate against: the oldest minor the managed services (EKS, GKE, AKS)
# still support in standard support, and the newest kubernetes-validate ships.
K8S_VERSIONS = ("1.33.0", "1.37.0")
NAMESPACE = "cta"
IMAGE_USER = 10001  # the Dockerfile's `USER 10001:10001`
WORK_POOL = "cta-k8s"

# Containers whose root filesystem stays writable, with why. Empty: every CTA process writes only under /tmp,
# /app/data, /app/logs and $HOME, which the manifests mount as volumes.
READ_WRITE_ROOT: dict[str, str] = {}
# Pods that mount their ServiceAccount token: the only ones that call the Kubernetes API.
API_CLIENTS = {"prefect-worker": "the Kubernetes worker creates and watches the flow-run Jobs"}
# Env names that look like secrets but are not.
NOT_SECRETS = re.compile(r"_KEY_ID$")
SECRET_LIKE = re.compile(r"PASSWORD|TOKEN|SECRET|KEY")

# The trader's env keys in Kubernetes beyond compose's, with why.
TRADER_K8S_ONLY = {
    "CTA_API_KEY": "the venue's keys for live trading (optional secretKeyRef); compose's trader is paper only",
    "CTA_API_SECRET": "the venue's keys for live trading (optional secretKeyRef); compose's trader is paper only",
    "CTA_LEDGER_SIGNING_KEY": "the ledger's signing key for live trading (optional secretKeyRef)",
}
DEPLOY_K8S_ONLY = {"CTA_PREFECT__WORK_POOL": "registers on the Kubernetes pool cta-k8s, not compose's process pool"}
WORKER_K8S_ONLY = {"PREFECT_KUBERNETES_CLUSTER_UID": "spares the worker a cluster-wide read of kube-system"}
# compose's S3 keys (MinIO): the Secret cta-object-store in dev, workload identity in the clouds.
S3_KEYS = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"}
OBJECT_STORE_SECRET = "cta-object-store"

# Placeholders the cloud overlays may hold: terraform's outputs (infra/terraform) and the Azure S3 gateway's URL.
PLACEHOLDER = re.compile(r"REPLACE_WITH_[A-Za-z0-9_]+")
ALLOWED_PLACEHOLDERS = {
    "aws": {
        "ecr_repository_urls_runtime",
        "ecr_repository_urls_flows",
        "irsa_role_arns_mlflow",
        "irsa_role_arns_flows",
        "irsa_role_arns_trader",
        "lake_bucket",
        "artifacts_bucket",
        "region",
        "redis_endpoint",
        "redis_port",
        "rds_endpoint",
        "rds_port",
    },
    "gcp": {
        "registry_url",
        "service_accounts_mlflow",
        "service_accounts_flows",
        "service_accounts_trader",
        "lake_bucket",
        "artifacts_bucket",
        "redis_host",
        "redis_port",
        "postgres_host",
    },
    "azure": {
        "registry_url",
        "workload_identity_client_ids_mlflow",
        "workload_identity_client_ids_flows",
        "workload_identity_client_ids_trader",
        "lake_bucket",
        "artifacts_bucket",
        "redis_host",
        "redis_port",
        "postgres_host",
    },
}
NON_TERRAFORM_PLACEHOLDERS = {"azure": {"s3_gateway_url"}}
WORKLOAD_IDENTITY = {
    "aws": "eks.amazonaws.com/role-arn",
    "gcp": "iam.gke.io/gcp-service-account",
    "azure": "azure.workload.identity/client-id",
}
AZURE_POD_LABEL = "azure.workload.identity/use"
# The ServiceAccounts terraform gives a cloud identity (infra/terraform/<cloud>: irsa_role_arns, service_accounts,
# workload_identity_client_ids): the object store's users. Its prefect_worker identity is for a process-type
# worker running flows in its own pod; the Kubernetes worker runs none, so its ServiceAccount gets none.
IDENTITY_USERS = {"cta-mlflow": "mlflow", "cta-flows": "flow-run", "cta-trader": "trader"}
NO_IDENTITY = ("cta-prefect-server", "cta-prefect-worker")

# checkov's checks skipped for every resource (infra/k8s/.checkov.yaml, each with its reason there) and the
# per-resource skips (annotations): anything else skipped is a skip nobody reviewed.
CHECKOV_SKIPS = {"CKV_K8S_15", "CKV_K8S_35", "CKV_K8S_43"}
CHECKOV_ANNOTATION_SKIPS = {("CKV_K8S_38", "prefect-worker")}


@dataclass(frozen=True)
class Rendered:
    """One overlay's `kubectl kustomize` output: the file (for the tools) and its documents."""

    overlay: str
    path: Path
    docs: list[dict[str, Any]]

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [d for d in self.docs if d["kind"] == kind]

    def get(self, kind: str, name: str) -> dict[str, Any]:
        found = [d for d in self.of_kind(kind) if d["metadata"]["name"] == name]
        assert len(found) == 1, f"{self.overlay}: {len(found)} {kind} named {name}"
        return found[0]

    def config_map(self, generated_name: str) -> dict[str, str]:
        """A generated ConfigMap's data by its name before kustomize's hash suffix."""
        found = [d for d in self.of_kind("ConfigMap") if _unhashed(d["metadata"]["name"]) == generated_name]
        assert len(found) == 1, f"{self.overlay}: {len(found)} ConfigMaps {generated_name}"
        data: dict[str, str] = found[0].get("data", {})
        return data

    def work_pool_template(self) -> dict[str, Any]:
        template: dict[str, Any] = json.loads(self.config_map("prefect-work-pool")["base-job-template.json"])
        return template


def _unhashed(name: str) -> str:
    return re.sub(r"-[a-z0-9]{10}$", "", name)


@pytest.fixture(scope="session")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Rendered]:
    """Every overlay rendered once (kubectl's built-in kustomize, offline), written where the tools can read it."""
    out = tmp_path_factory.mktemp("k8s")
    result: dict[str, Rendered] = {}
    for overlay in OVERLAYS:
        text = run_tool(["kubectl", "kustomize", K8S / "overlays" / overlay], cwd=REPO_ROOT, timeout=120).stdout
        path = out / f"{overlay}.yaml"
        path.write_text(text)
        result[overlay] = Rendered(overlay, path, [d for d in yaml.safe_load_all(text) if d])
    return result


@pytest.fixture(scope="session")
def compose() -> dict[str, Any]:
    stack: dict[str, Any] = yaml.safe_load((REPO_ROOT / "compose.yaml").read_text())
    return stack


def compose_env(compose: dict[str, Any], service: str) -> dict[str, str]:
    """A compose service's environment with every `${VAR:-default}` at its default (`${VAR}`: empty)."""
    env = compose["services"][service]["environment"]
    return {k: re.sub(r"\$\{[A-Z0-9_]+(?::-([^}]*))?\}", lambda m: m.group(1) or "", str(v)) for k, v in env.items()}


def pod_specs(r: Rendered) -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(workload, pod template metadata, pod spec) of every Deployment and Job, and of the work pool's flow runs."""
    for kind in ("Deployment", "Job"):
        for d in r.of_kind(kind):
            template = d["spec"]["template"]
            yield d["metadata"]["name"], template.get("metadata", {}), template["spec"]
    template = r.work_pool_template()
    defaults = {k: v["default"] for k, v in template["variables"]["properties"].items() if "default" in v}
    job = with_defaults(template["job_configuration"]["job_manifest"], defaults)
    yield "flow-run", job["spec"]["template"]["metadata"], job["spec"]["template"]["spec"]


def with_defaults(node: Any, defaults: dict[str, Any]) -> Any:
    """A Prefect job template as the worker fills it when a deployment sets no job variables: each "{{ name }}"
    with its variable's default (left as is without one)."""
    if isinstance(node, dict):
        return {k: with_defaults(v, defaults) for k, v in node.items()}
    if isinstance(node, list):
        return [with_defaults(v, defaults) for v in node]
    if isinstance(node, str) and (m := re.fullmatch(r"\{\{ (\w+) \}\}", node)) and m.group(1) in defaults:
        return defaults[m.group(1)]
    return node


def containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [*spec.get("initContainers", []), *spec["containers"]]


def env_keys(r: Rendered, container: dict[str, Any]) -> set[str]:
    """The names a container's environment has: its env list and the keys of the ConfigMaps it takes whole."""
    keys = {e["name"] for e in container.get("env", [])}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            keys |= set(r.config_map(_unhashed(source["configMapRef"]["name"])))
    return keys


def only_container(r: Rendered, kind: str, name: str) -> dict[str, Any]:
    spec = r.get(kind, name)["spec"]["template"]["spec"]
    assert len(spec["containers"]) == 1
    container: dict[str, Any] = spec["containers"][0]
    return container


def flows_image(r: Rendered) -> str:
    return str(only_container(r, "Deployment", "prefect-worker")["image"])


# ----- the tools ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_overlays_validate_strictly(rendered: dict[str, Rendered], version: str) -> None:
    """Unknown fields, wrong types, removed APIs: the API server would refuse them at apply time; catch them here."""
    files = [rendered[o].path for o in OVERLAYS]
    out = run_tool([sys.executable, "-m", "kubernetes_validate", "--strict", "-k", version, *files], timeout=300)
    for overlay in OVERLAYS:
        assert f"{rendered[overlay].path} passed" in out.stdout, f"{overlay}: nothing validated"


@pytest.mark.slow
def test_checkov_passes(rendered: dict[str, Rendered], checkov: Path, tmp_path: Path) -> None:
    """checkov's Kubernetes checks on all overlays at once; the only skips are the reviewed ones."""
    for r in rendered.values():
        (tmp_path / r.path.name).write_text(r.path.read_text())
    args = [checkov, "--config-file", K8S / ".checkov.yaml", "--output", "json"]
    result = subprocess.run(
        [str(a) for a in [*args, "--directory", tmp_path]],
        env={**CHECKOV_ENV, "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, f"checkov failed:\n{result.stdout[-8000:]}\n{result.stderr[-4000:]}"
    report = json.loads(result.stdout)
    summary = report["summary"]
    assert summary["failed"] == 0 and summary["passed"] > 0 and summary["parsing_errors"] == 0, summary
    skipped = {(c["check_id"], c["resource"].split(".")[-1]) for c in report["results"]["skipped_checks"]}
    unexpected = {s for s in skipped if s[0] not in CHECKOV_SKIPS and s not in CHECKOV_ANNOTATION_SKIPS}
    assert not unexpected, f"skips nobody reviewed: {unexpected}"
    config = yaml.safe_load((K8S / ".checkov.yaml").read_text())
    assert set(config["skip-check"]) == CHECKOV_SKIPS


# ----- the rules ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_trader_is_one_replica_recreated(rendered: dict[str, Rendered], overlay: str) -> None:
    """Never two traders on one market: one replica, and no rolling update that would start the new one first."""
    r = rendered[overlay]
    trader = r.get("Deployment", "trader")
    assert trader["spec"]["replicas"] == 1
    assert trader["spec"]["strategy"] == {"type": "Recreate"}
    pdbs = [
        p["spec"]["selector"]["matchLabels"].get("app.kubernetes.io/name") for p in r.of_kind("PodDisruptionBudget")
    ]
    assert "trader" not in pdbs, "a PDB on a singleton blocks node drains"
    probes = only_container(r, "Deployment", "trader")
    assert probes["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "api"}
    assert probes["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "api"}
    assert probes["ports"] == [{"name": "api", "containerPort": 8780}]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_dashboard_is_its_own_service(rendered: dict[str, Rendered], overlay: str) -> None:
    """`cta dashboard` on its port, two replicas with a PDB (it holds no state), the trader's tokens and
    ServiceAccount, reachable only from pods labelled as its clients, and able to reach what its pages read."""
    r = rendered[overlay]
    deployment = r.get("Deployment", "dashboard")
    assert deployment["spec"]["replicas"] >= 2
    pdb = r.get("PodDisruptionBudget", "dashboard")["spec"]
    assert pdb["minAvailable"] == 1 and pdb["selector"]["matchLabels"] == {"app.kubernetes.io/name": "dashboard"}
    container = only_container(r, "Deployment", "dashboard")
    assert container["command"] == ["cta", "dashboard"]
    assert container["ports"] == [{"name": "http", "containerPort": 8790}]
    assert {e["name"]: e.get("value") for e in container["env"]}["CTA_SERVING__API_PORT"] == "8790"
    spec = deployment["spec"]["template"]["spec"]
    trader = r.get("Deployment", "trader")["spec"]["template"]["spec"]
    assert spec["serviceAccountName"] == trader["serviceAccountName"]
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"] if "valueFrom" in e}
    trader_refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in containers(trader)[0]["env"] if "valueFrom" in e}
    for key in ("CTA_API_TOKEN", "CTA_VIEWER_TOKEN", "CTA_DB_PASSWORD"):
        assert refs[key] == trader_refs[key], key
    assert r.get("Service", "dashboard")["spec"]["ports"][0]["port"] == 8790
    policy = r.get("NetworkPolicy", "dashboard")["spec"]
    assert [rule["ports"] for rule in policy["ingress"]] == [[{"protocol": "TCP", "port": 8790}]]
    assert policy["ingress"][0]["from"][0]["podSelector"]["matchLabels"] == {"cta.io/dashboard-client": "true"}
    mlflow_from = [
        peer["podSelector"]["matchLabels"]["app.kubernetes.io/name"]
        for rule in r.get("NetworkPolicy", "mlflow")["spec"]["ingress"]
        for peer in rule["from"]
    ]
    assert "dashboard" in mlflow_from
    if overlay == "azure":
        assert deployment["spec"]["template"]["metadata"]["labels"][AZURE_POD_LABEL] == "true"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pods_are_hardened(rendered: dict[str, Rendered], overlay: str) -> None:
    """Non-root as the image's user, no privilege escalation, no capabilities, seccomp, read-only root, limits,
    no API token unless the pod uses the API; probes on every long-running server."""
    r = rendered[overlay]
    kinds = {d["metadata"]["name"]: d["kind"] for d in r.docs}
    seen = set()
    for workload, _, spec in pod_specs(r):
        seen.add(workload)
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True and pod["runAsUser"] == IMAGE_USER, workload
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}, workload
        assert spec["automountServiceAccountToken"] is (workload in API_CLIENTS), workload
        for c in containers(spec):
            where = f"{overlay}/{workload}/{c['name']}"
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["capabilities"] == {"drop": ["ALL"]}, where
            assert sc["readOnlyRootFilesystem"] is (c["name"] not in READ_WRITE_ROOT), where
            for bound in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(c["resources"][bound]), f"{where}: {bound}"
            image = c["image"]
            assert re.fullmatch(r"[^:@]+(:[0-9]+)?/?[^:@]*:[A-Za-z0-9_.-]+", image.split("@")[0]), where
            assert not image.endswith(":latest"), where
            if kinds.get(workload) == "Deployment":
                for probe in ("livenessProbe", "readinessProbe"):
                    assert probe in c, f"{where}: no {probe}"
    assert {"mlflow", "prefect-server", "prefect-worker", "trader", "dashboard", "flows-deploy", "flow-run"} <= seen


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_secrets_only_by_reference(rendered: dict[str, Rendered], overlay: str) -> None:
    """No Secret objects (they are created beside the manifests), every secret-looking variable from a Secret, no
    password inside any URL of a ConfigMap."""
    r = rendered[overlay]
    assert not r.of_kind("Secret")
    for workload, _, spec in pod_specs(r):
        for c in containers(spec):
            env = c.get("env", [])
            if isinstance(env, dict):  # the work pool's "{{ env }}" default: Prefect makes it plain values
                assert not [k for k in env if SECRET_LIKE.search(k)], f"{overlay}/{workload}: {env}"
                continue
            for e in env:
                if SECRET_LIKE.search(e["name"]) and not NOT_SECRETS.search(e["name"]):
                    assert "value" not in e and "secretKeyRef" in e["valueFrom"], f"{overlay}/{workload}: {e}"
    for cm in r.of_kind("ConfigMap"):
        for key, value in cm.get("data", {}).items():
            assert not re.search(r"://[^/@\s]+:[^/@\s]+@", value), f"{cm['metadata']['name']}.{key}: a password"
            assert "password=" not in value.lower(), f"{cm['metadata']['name']}.{key}"
            if not key.endswith(".json"):
                assert not (SECRET_LIKE.search(key) and not NOT_SECRETS.search(key)), f"secret-like key {key}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies_deny_by_default(rendered: dict[str, Rendered], overlay: str) -> None:
    """Default deny both ways, DNS allowed, and an allow-list for every workload (flow runs included)."""
    r = rendered[overlay]
    policies = r.of_kind("NetworkPolicy")
    deny = r.get("NetworkPolicy", "default-deny-all")["spec"]
    assert deny["podSelector"] == {} and set(deny["policyTypes"]) == {"Ingress", "Egress"}
    assert "ingress" not in deny and "egress" not in deny
    dns = r.get("NetworkPolicy", "allow-dns")["spec"]
    assert {p["port"] for rule in dns["egress"] for p in rule["ports"]} == {53}
    selected = set()
    for p in policies:
        selector = p["spec"]["podSelector"]
        selected |= {selector.get("matchLabels", {}).get("app.kubernetes.io/name")}
        for expr in selector.get("matchExpressions", []):
            selected |= set(expr["values"])
    for workload, metadata, _ in pod_specs(r):
        assert metadata["labels"]["app.kubernetes.io/name"] in selected, f"{overlay}: no policy for {workload}"
    trader = r.get("NetworkPolicy", "trader")["spec"]
    assert [rule["ports"] for rule in trader["ingress"]] == [[{"protocol": "TCP", "port": 8780}]]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_work_pool_runs_flows_as_jobs_in_the_flows_image(rendered: dict[str, Rendered], overlay: str) -> None:
    """The Kubernetes pool's template: valid Prefect 3 shape, the flows image by default, a ServiceAccount and
    a data volume that exist, and no difference from the base's beyond the image (and Azure's identity label)."""
    r = rendered[overlay]
    template = r.work_pool_template()
    variables = template["variables"]["properties"]
    job = template["job_configuration"]["job_manifest"]
    assert job["kind"] == "Job" and job["spec"]["backoffLimit"] == 0
    pod = job["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == "{{ image }}"
    assert variables["image"]["default"] == flows_image(r)
    assert flows_image(r).split(":")[0].endswith("flows")
    assert pod["serviceAccountName"] == "{{ service_account_name }}"
    r.get("ServiceAccount", variables["service_account_name"]["default"])
    assert r.get("PersistentVolumeClaim", variables["data_claim"]["default"])["spec"]["accessModes"]
    assert variables["namespace"]["default"] == NAMESPACE
    assert variables["env"]["default"]["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"] == "30"
    # Every {{ placeholder }} of the job configuration is a declared variable.
    used = set(re.findall(r"\{\{ (\w+) \}\}", json.dumps(template["job_configuration"])))
    assert used <= set(variables), used - set(variables)
    base = json.loads((K8S / "base" / "prefect" / "base-job-template.json").read_text())
    base["variables"]["properties"]["image"]["default"] = variables["image"]["default"]
    if overlay == "azure":
        base["job_configuration"]["job_manifest"]["spec"]["template"]["metadata"]["labels"][AZURE_POD_LABEL] = "true"
    assert template == base, "the overlay's template drifted from the base's"
    # The worker serves this pool, and the deploy Job creates it from this template.
    worker = only_container(r, "Deployment", "prefect-worker")["command"]
    assert worker[worker.index("--pool") + 1] == WORK_POOL and worker[worker.index("--type") + 1] == "kubernetes"
    init = r.get("Job", "flows-deploy")["spec"]["template"]["spec"]["initContainers"][0]["command"]
    assert init[:4] == ["prefect", "work-pool", "create", WORK_POOL] and "--overwrite" in init


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_kubernetes_worker_accepts_the_template(rendered: dict[str, Rendered], overlay: str) -> None:
    """prefect-kubernetes' own job configuration, filled from the template with its defaults as a flow run's would be
    (what the worker does before it creates the Job; block and variable references aside, none are used): it
    refuses a manifest it cannot run (e.g. without the pod spec's completions/parallelism it expects)."""
    from prefect.utilities.templating import apply_values
    from prefect_kubernetes.worker import KubernetesWorkerJobConfiguration

    template = rendered[overlay].work_pool_template()
    properties = template["variables"]["properties"]
    defaults = {name: spec["default"] for name, spec in properties.items() if spec.get("default") is not None}
    values = {**defaults, "name": "flow-run-1", "command": "prefect flow-run execute"}
    config = KubernetesWorkerJobConfiguration(**apply_values(template["job_configuration"], values))
    pod = config.job_manifest["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == flows_image(rendered[overlay])
    assert config.namespace == NAMESPACE and pod["serviceAccountName"] == defaults["service_account_name"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_env_keys_match_compose(rendered: dict[str, Rendered], compose: dict[str, Any], overlay: str) -> None:
    """Each process gets the variables compose gives it: the same keys, differences listed with their reasons."""
    r = rendered[overlay]
    trader = env_keys(r, only_container(r, "Deployment", "trader"))
    assert trader == set(compose_env(compose, "trader")) | set(TRADER_K8S_ONLY)
    deploy_spec = r.get("Job", "flows-deploy")["spec"]["template"]["spec"]
    assert env_keys(r, deploy_spec["containers"][0]) == set(compose_env(compose, "deploy")) | set(DEPLOY_K8S_ONLY)
    worker = env_keys(r, only_container(r, "Deployment", "prefect-worker"))
    assert worker == set(compose_env(compose, "prefect-worker")) - S3_KEYS | set(WORKER_K8S_ONLY)
    # The flow runs (run inside compose's worker): the heartbeat, and the S3 keys where there are any (dev).
    run = r.work_pool_template()["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]["containers"][0]
    assert {"secretRef": {"name": OBJECT_STORE_SECRET, "optional": True}} in run["envFrom"]
    mlflow = only_container(r, "Deployment", "mlflow")
    assert {"secretRef": {"name": OBJECT_STORE_SECRET, "optional": True}} in mlflow["envFrom"]
    assert "PGPASSWORD" in env_keys(r, mlflow)
    server = env_keys(r, only_container(r, "Deployment", "prefect-server"))
    assert server == set(compose_env(compose, "prefect-server"))
    dashboard = env_keys(r, only_container(r, "Deployment", "dashboard"))
    assert dashboard == set(compose_env(compose, "dashboard"))


def test_dev_matches_compose_values(rendered: dict[str, Rendered], compose: dict[str, Any]) -> None:
    """dev keeps compose's service names, so its settings are compose's defaults, value for value."""
    r = rendered["dev"]
    settings = r.config_map("cta-settings")
    assert settings == {k: v for k, v in compose_env(compose, "deploy").items()}
    trader = {e["name"]: e.get("value") for e in only_container(r, "Deployment", "trader")["env"]}
    for key, value in compose_env(compose, "trader").items():
        if key in settings:
            continue
        if SECRET_LIKE.search(key):  # compose's from .env, here from a Secret (test_secrets_only_by_reference)
            assert trader[key] is None, key
        else:
            assert trader[key] == value, key
    # MLflow: compose's command-line options are the same values through MLflow's own variables.
    command = compose["services"]["mlflow"]["command"]
    options = {command[i]: command[i + 1] for i in range(2, len(command) - 1) if command[i].startswith("--")}
    mlflow_env = r.config_map("mlflow-env")
    for option, value in options.items():
        if option == "--serve-artifacts":
            continue
        name = "MLFLOW_" + option[2:].replace("-", "_").upper()
        assert mlflow_env[name] == re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", value), name
    assert mlflow_env["MLFLOW_SERVE_ARTIFACTS"] == "true" and "--serve-artifacts" in command
    exchange = {e["name"]: e["value"] for e in only_container(r, "Deployment", "exchange")["env"]}
    assert exchange == compose_env(compose, "exchange")
    hosts = {s["metadata"]["name"] for s in r.of_kind("Service") if s["spec"].get("type") == "ExternalName"}
    assert hosts == {"postgres", "redis", "minio"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_settings_load(rendered: dict[str, Rendered], overlay: str) -> None:
    """The trader's settings (the ConfigMap plus its literal env) pass CTA's own strict loader: a typo in a key
    or a malformed value fails here, not at the pod's start."""
    from cta.config import load_settings

    r = rendered[overlay]
    container = only_container(r, "Deployment", "trader")
    env = dict(r.config_map("cta-settings"))
    env.update({e["name"]: e["value"] for e in container["env"] if "value" in e})
    env.update(CTA_DB_PASSWORD="x", CTA_API_TOKEN="x" * 32)
    settings = load_settings(env=env, config_dir=REPO_ROOT / "config")
    assert settings.profile == "production"
    assert settings.serving.api_port == 8780
    if overlay in CLOUDS:
        assert settings.exchange.api_url is None and settings.exchange.market_time == "venue"
        assert "exchange" not in {d["metadata"]["name"] for d in r.of_kind("Deployment")}


@pytest.mark.parametrize("overlay", CLOUDS)
def test_cloud_overlays_use_workload_identity(rendered: dict[str, Rendered], overlay: str) -> None:
    """Object-store access through the cloud's workload identity on the ServiceAccounts that need it, and every
    cloud-specific value a named placeholder of a terraform output (or a listed gap)."""
    r = rendered[overlay]
    for name in IDENTITY_USERS:
        annotations = r.get("ServiceAccount", name)["metadata"].get("annotations", {})
        assert PLACEHOLDER.fullmatch(annotations[WORKLOAD_IDENTITY[overlay]]), name
    for name in NO_IDENTITY:
        assert WORKLOAD_IDENTITY[overlay] not in r.get("ServiceAccount", name)["metadata"].get("annotations", {})
    if overlay == "azure":  # Workload ID's webhook mutates only the pods labelled so
        pods = {workload: (metadata, spec) for workload, metadata, spec in pod_specs(r)}
        for name, workload in IDENTITY_USERS.items():
            metadata, spec = pods[workload]
            assert spec["serviceAccountName"] == name and metadata["labels"][AZURE_POD_LABEL] == "true", workload
    text = r.path.read_text()
    found = {m[len("REPLACE_WITH_") :] for m in PLACEHOLDER.findall(text)}
    terraform = {f[len("terraform_output_") :] for f in found if f.startswith("terraform_output_")}
    assert terraform == ALLOWED_PLACEHOLDERS[overlay]
    assert found - {f"terraform_output_{t}" for t in terraform} == NON_TERRAFORM_PLACEHOLDERS.get(overlay, set())
    assert r.get("PersistentVolumeClaim", "flows-data")["spec"]["storageClassName"]
    assert "minio" not in text and "host.docker.internal" not in text


def test_dev_has_no_placeholders(rendered: dict[str, Rendered]) -> None:
    assert not PLACEHOLDER.search(rendered["dev"].path.read_text())


def test_fill_replaces_every_aws_placeholder_from_terraform_outputs(
    rendered: dict[str, Rendered], tmp_path: Path
) -> None:
    """infra/k8s/fill.py with outputs shaped like `terraform output -json` leaves nothing to type by hand, and
    refuses (exit 1, no output) when an output is missing."""
    outputs: dict[str, Any] = {
        "ecr_repository_urls": {"runtime": "1.dkr.ecr.eu-central-1.amazonaws.com/cta/runtime", "flows": "1.dkr/f"},
        "irsa_role_arns": {"mlflow": "arn:1:mlflow", "flows": "arn:aws:iam::1:role/flows", "trader": "arn:1:trader"},
        "lake_bucket": "lake-1",
        "artifacts_bucket": "artifacts-1",
        "region": "eu-central-1",
        "redis_endpoint": "redis.internal",
        "redis_port": 6379,
        "rds_endpoint": "db.internal",
        "rds_port": 5432,
    }
    tf = tmp_path / "tf.json"
    tf.write_text(json.dumps({k: {"value": v, "sensitive": False} for k, v in outputs.items()}))
    fill = [sys.executable, K8S / "fill.py", tf]
    result = subprocess.run(
        [str(a) for a in fill], input=rendered["aws"].path.read_text(), capture_output=True, text=True, check=True
    )
    docs = [d for d in yaml.safe_load_all(result.stdout) if d]
    assert not PLACEHOLDER.search(result.stdout)
    filled = Rendered("aws", tmp_path / "aws.yaml", docs)
    assert (
        only_container(filled, "Deployment", "trader")["image"] == f"{outputs['ecr_repository_urls']['runtime']}:0.1.0"
    )
    assert filled.work_pool_template()["variables"]["properties"]["image"]["default"] == "1.dkr/f:0.1.0"
    sa = filled.get("ServiceAccount", "cta-flows")["metadata"]["annotations"]
    assert sa[WORKLOAD_IDENTITY["aws"]] == "arn:aws:iam::1:role/flows"
    settings = filled.config_map("cta-settings")
    assert settings["CTA_SERVING__DATABASE_URL"] == "postgresql+psycopg2://cta@db.internal:5432/cta?sslmode=require"
    del outputs["rds_endpoint"]
    tf.write_text(json.dumps({k: {"value": v} for k, v in outputs.items()}))
    missing = subprocess.run(
        [str(a) for a in fill], input=rendered["aws"].path.read_text(), capture_output=True, text=True, check=False
    )
    assert missing.returncode == 1 and missing.stdout == ""
    assert "REPLACE_WITH_terraform_output_rds_endpoint" in missing.stderr
