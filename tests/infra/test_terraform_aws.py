"""The AWS deployment (infra/terraform/aws) checked with the real terraform: fmt, init against the local provider
mirror, validate, `terraform test` (mock provider: encryption, nothing public, names and tags, dev vs prod), an
apply + destroy round trip against a moto server, no secret values in plans/state/outputs, and checkov.

What moto can and cannot hold (moto 5.2.5, provider 5.100.0) is in MOTO_TARGETS / NOT_ON_MOTO below."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import moto_server as start_moto
from tests.infra.conftest import CHECKOV_ENV, INFRA, copy_module, run_tool

TERRAFORM = INFRA / "terraform"
AWS = TERRAFORM / "aws"
MODULES = ["cloudwatch-logs", "ecr", "eks", "elasticache", "iam-irsa", "kms", "rds", "s3-bucket", "secrets", "vpc"]
SERVICES = {"trader", "flows", "mlflow", "prefect_worker"}
REGION = "eu-central-1"
ACCOUNT = "123456789012"  # moto's account

# Everything of the aws root that moto applies and destroys. Left out (see NOT_ON_MOTO): ElastiCache, whose
# replication group moto creates but then cannot describe (DescribeCacheClusters: CacheClusterNotFound for its member
# cluster) and whose subnet group it cannot delete (DeleteCacheSubnetGroup not implemented), and the two security
# group rules that reference the EKS cluster security group: moto's EKS returns no clusterSecurityGroupId. RDS alone
# costs ~80 s to create and ~60 s to destroy (the provider's status waiters), the bucket lifecycles ~55 s.
MOTO_TARGETS = [
    "module.kms",
    "module.vpc",
    "module.eks",
    "module.rds.aws_db_instance.this",
    "module.lake_bucket",
    "module.artifacts_bucket",
    "module.ecr",
    "module.secrets",
    "module.logs",
    "module.irsa",
]
NOT_ON_MOTO = {"module.redis", "module.rds.aws_vpc_security_group_ingress_rule"}
MOTO_ENDPOINTS = ["s3", "iam", "sts", "ec2", "rds", "elasticache", "ecr", "secretsmanager", "kms", "logs", "eks"]
# A value put into a secret after apply: it must never show up in terraform's state, outputs or plans.
CANARY_SECRET = "canary-not-for-terraform-7f3a9c"


def terraform(args: list[str], cwd: Path, env: dict[str, str], timeout: float = 900) -> str:
    return run_tool(["terraform", *args], cwd=cwd, env=env, timeout=timeout).stdout


@pytest.fixture(scope="module")
def aws_root(tmp_path_factory: pytest.TempPathFactory, terraform_env: dict[str, str]) -> Path:
    """A copy of infra/terraform with the aws root initialised without its (prod, S3) backend."""
    tree = copy_module(TERRAFORM, tmp_path_factory.mktemp("tf") / "terraform")
    terraform(["init", "-backend=false", "-input=false", "-no-color"], tree / "aws", terraform_env)
    return tree / "aws"


def test_old_single_root_is_gone() -> None:
    assert not list(TERRAFORM.glob("*.tf")), "infra/terraform/*.tf would be a second source of truth beside aws/"
    assert (AWS / "backend-prod.hcl.example").is_file()
    assert sorted(p.name for p in (AWS / "modules").iterdir()) == MODULES


def test_fmt(terraform_env: dict[str, str]) -> None:
    # fmt only reads; -check exits non-zero and names the files that are not formatted
    terraform(["fmt", "-check", "-recursive", "-no-color", str(AWS)], TERRAFORM, terraform_env)


def test_validate(aws_root: Path, terraform_env: dict[str, str]) -> None:
    out = terraform(["validate", "-json", "-no-color"], aws_root, terraform_env)
    assert json.loads(out)["valid"] is True


def test_bootstrap_state_validates(aws_root: Path, terraform_env: dict[str, str]) -> None:
    root = aws_root / "bootstrap-state"
    terraform(["init", "-input=false", "-no-color"], root, terraform_env)
    assert json.loads(terraform(["validate", "-json", "-no-color"], root, terraform_env))["valid"] is True


def test_backend_is_s3_configured_at_init() -> None:
    versions = (AWS / "versions.tf").read_text()
    assert 'backend "s3" {}' in versions
    example = (AWS / "backend-prod.hcl.example").read_text()
    assert "use_lockfile = true" in example and "encrypt      = true" in example


def test_terraform_test_mock_provider(aws_root: Path, terraform_env: dict[str, str]) -> None:
    out = terraform(["test", "-no-color"], aws_root, terraform_env)
    runs = [
        "encryption_everywhere",
        "nothing_public",
        "names_and_tags",
        "dev_sizes",
        "prod_sizes_and_protection",
        "environment_is_validated",
    ]
    for run in runs:
        assert f'run "{run}"... pass' in out, out
    assert f"Success! {len(runs)} passed, 0 failed." in out


def test_no_secret_values_are_variables_or_plain_outputs() -> None:
    """Secrets are created empty; terraform never takes a secret value as input."""
    text = "\n".join(p.read_text() for p in AWS.rglob("*.tf"))
    assert "aws_secretsmanager_secret_version" not in text
    assert "secret_string" not in text
    assert "random_password" not in text and "auth_token " not in text
    variables = (AWS / "variables.tf").read_text()
    for word in ("password", "secret", "token", "api_key"):
        assert word not in variables.lower()


# ----- moto round trip ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def moto_server() -> Iterator[str]:
    """Our own moto server: IAM needs AWS-managed policies loaded (MOTO_IAM_LOAD_MANAGED_POLICIES) for the EKS/RDS
    role attachments, which the shared moto_s3 fixture does not enable."""
    with start_moto(MOTO_IAM_LOAD_MANAGED_POLICIES="true") as url:
        yield url


def moto_override(url: str) -> str:
    """An override file: local state instead of the S3 backend, and the provider pointed at moto. Credentials come
    from the environment (AWS_ACCESS_KEY_ID=test), so no key is written into HCL."""
    endpoints = "\n".join(f'    {name} = "{url}"' for name in MOTO_ENDPOINTS)
    return (
        'terraform {\n  backend "local" {}\n}\n\n'
        'provider "aws" {\n'
        "  region                      = var.region\n"
        "  skip_credentials_validation = true\n"
        "  skip_requesting_account_id  = true\n"
        "  skip_metadata_api_check     = true\n"
        "  s3_use_path_style           = true\n"
        f"  endpoints {{\n{endpoints}\n  }}\n"
        "  default_tags {\n    tags = local.tags\n  }\n"
        "}\n"
    )


def boto(service: str, url: str) -> Any:
    import boto3

    return boto3.client(
        service, endpoint_url=url, region_name=REGION, aws_access_key_id="test", aws_secret_access_key="test"
    )


def assert_no_canary(text: str, what: str) -> None:
    assert CANARY_SECRET not in text, f"a secret value leaked into {what}"


@pytest.mark.slow
@pytest.mark.integration
def test_moto_apply_and_destroy_round_trip(tmp_path: Path, terraform_env: dict[str, str], moto_server: str) -> None:
    root = copy_module(TERRAFORM, tmp_path / "terraform") / "aws"
    (root / "moto_override.tf").write_text(moto_override(moto_server))
    env = {**terraform_env, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_REGION": REGION}
    var = ["-var", "environment=dev", "-var", f"region={REGION}"]
    targets = [f"-target={t}" for t in MOTO_TARGETS]
    terraform(["init", "-input=false", "-no-color"], root, env)

    # The plan: names every secret by name only, and holds no value.
    terraform(["plan", "-input=false", "-no-color", "-parallelism=30", "-out=tfplan", *var, *targets], root, env)
    plan = json.loads(terraform(["show", "-json", "tfplan"], root, env))
    planned = {r["address"] for r in plan["resource_changes"] if r["change"]["actions"] == ["create"]}
    assert not any(a.startswith(tuple(NOT_ON_MOTO)) for a in planned)
    assert {
        f'module.secrets.aws_secretsmanager_secret.this["{n}"]' for n in ("exchange-api-key", "api-token")
    } <= planned
    terraform(["apply", "-input=false", "-no-color", "-parallelism=30", "tfplan"], root, env, timeout=1200)

    try:
        outputs = json.loads(terraform(["output", "-json"], root, env))
        check_applied(moto_server, outputs)
        check_no_secret_values(root, env, moto_server, outputs)
    finally:
        terraform(["destroy", "-auto-approve", "-input=false", "-no-color", "-parallelism=30", *var], root, env)

    assert json.loads(terraform(["show", "-json"], root, env)).get("values") is None, "state not empty after destroy"
    check_destroyed(moto_server, outputs)


def check_applied(url: str, outputs: dict[str, Any]) -> None:
    value = {k: v["value"] for k, v in outputs.items()}
    assert value["lake_bucket"] == f"cta-dev-lake-{ACCOUNT}"
    assert value["artifacts_bucket"] == f"cta-dev-mlflow-artifacts-{ACCOUNT}"
    assert value["cluster_name"] == "cta-dev"  # (region and tags depend on no resource: -target leaves them out)
    assert set(value["irsa_role_arns"]) == SERVICES
    assert set(value["ecr_repository_urls"]) == {"runtime", "flows"}
    assert value["rds_endpoint"]
    assert "redis_endpoint" not in value  # ElastiCache is not applied on moto

    s3 = boto("s3", url)
    kms_arn = value["kms_key_arn"]
    for bucket in (value["lake_bucket"], value["artifacts_bucket"]):
        assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
        sse = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"][0]
        assert sse["ApplyServerSideEncryptionByDefault"] == {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": kms_arn}
        pab = s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
        assert pab == dict.fromkeys(
            ["BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy", "RestrictPublicBuckets"], True
        )
        rules = s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
        assert any(r.get("NoncurrentVersionExpiration", {}).get("NoncurrentDays") == 30 for r in rules)
        policy = json.loads(s3.get_bucket_policy(Bucket=bucket)["Policy"])
        assert policy["Statement"][0]["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
        tags = {t["Key"]: t["Value"] for t in s3.get_bucket_tagging(Bucket=bucket)["TagSet"]}
        assert tags == {"project": "cta", "environment": "dev", "managed_by": "terraform"}

    assert boto("kms", url).get_key_rotation_status(KeyId=kms_arn)["KeyRotationEnabled"] is True

    secrets = boto("secretsmanager", url)
    for name, arn in value["secret_arns"].items():
        described = secrets.describe_secret(SecretId=arn)
        assert described["Name"] == f"cta/dev/{name}" and described["KmsKeyId"] == kms_arn
        assert not described.get("VersionIdsToStages"), "secrets are created empty"

    rds = boto("rds", url).describe_db_instances(DBInstanceIdentifier="cta-dev")["DBInstances"][0]
    assert rds["PubliclyAccessible"] is False and rds["StorageEncrypted"] is True
    assert rds["BackupRetentionPeriod"] == 7 and rds["Engine"] == "postgres"
    assert rds["MasterUserSecret"]["SecretArn"] == value["rds_master_secret_arn"]

    eks = boto("eks", url).describe_cluster(name="cta-dev")["cluster"]
    assert eks["resourcesVpcConfig"]["endpointPrivateAccess"] is True
    assert eks["encryptionConfig"][0]["resources"] == ["secrets"]

    ecr = boto("ecr", url).describe_repositories()["repositories"]
    assert {r["repositoryName"]: r["imageTagMutability"] for r in ecr} == {
        "cta-dev/runtime": "IMMUTABLE",
        "cta-dev/flows": "IMMUTABLE",
    }

    iam = boto("iam", url)
    trader = iam.get_role(RoleName="cta-dev-trader")["Role"]
    trust = trader["AssumeRolePolicyDocument"]
    trust = json.loads(trust) if isinstance(trust, str) else trust
    condition = trust["Statement"][0]["Condition"]["StringEquals"]
    assert "system:serviceaccount:cta:cta-trader" in condition.values()
    # every ServiceAccount the aws overlay annotates with a role is the one that role trusts
    overlay = yaml.safe_load_all((INFRA / "k8s" / "overlays" / "aws" / "service-accounts.yaml").read_text())
    for account in overlay:
        arn = account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
        service = arn.removeprefix("REPLACE_WITH_terraform_output_irsa_role_arns_")
        role = iam.get_role(RoleName=f"cta-dev-{service.replace('_', '-')}")["Role"]
        document = role["AssumeRolePolicyDocument"]
        document = json.loads(document) if isinstance(document, str) else document
        subjects = document["Statement"][0]["Condition"]["StringEquals"].values()
        assert f"system:serviceaccount:cta:{account['metadata']['name']}" in subjects, (service, subjects)
    policy = iam.get_role_policy(RoleName="cta-dev-trader", PolicyName="least-privilege")["PolicyDocument"]
    policy = json.loads(policy) if isinstance(policy, str) else policy
    resources = [r for s in policy["Statement"] for r in s["Resource"]]
    assert "*" not in resources, "least privilege: no wildcard resources"
    assert value["secret_arns"]["exchange-api-key"] in resources
    mlflow = iam.get_role_policy(RoleName="cta-dev-mlflow", PolicyName="least-privilege")["PolicyDocument"]
    mlflow = json.loads(mlflow) if isinstance(mlflow, str) else mlflow
    mlflow_resources = {r for s in mlflow["Statement"] for r in s["Resource"]}
    assert not any(arn in mlflow_resources for arn in value["secret_arns"].values()), "mlflow reads no exchange keys"

    groups = boto("logs", url).describe_log_groups(logGroupNamePrefix="/cta/dev/")["logGroups"]
    assert {g["logGroupName"] for g in groups} >= {f"/cta/dev/{s}" for s in SERVICES}
    assert all(g.get("kmsKeyId") == kms_arn for g in groups)

    vpcs = boto("ec2", url).describe_vpcs(Filters=[{"Name": "tag:Name", "Values": ["cta-dev"]}])["Vpcs"]
    assert [v["CidrBlock"] for v in vpcs] == ["10.40.0.0/16"]


def check_no_secret_values(root: Path, env: dict[str, str], url: str, outputs: dict[str, Any]) -> None:
    """Put a value into a secret the way operators do, then look for it everywhere terraform writes."""
    value = {k: v["value"] for k, v in outputs.items()}
    boto("secretsmanager", url).put_secret_value(
        SecretId=value["secret_arns"]["exchange-api-key"], SecretString=CANARY_SECRET
    )
    terraform(
        ["apply", "-refresh-only", "-auto-approve", "-input=false", "-no-color", "-var", "environment=dev"], root, env
    )
    assert_no_canary(json.dumps(json.loads(terraform(["output", "-json"], root, env))), "outputs")
    assert_no_canary(terraform(["show", "-json"], root, env), "state")
    assert_no_canary((root / "terraform.tfstate").read_text(), "the state file")
    terraform(["plan", "-input=false", "-no-color", "-out=after.tfplan", "-var", "environment=dev"], root, env)
    assert_no_canary(terraform(["show", "-json", "after.tfplan"], root, env), "a plan")
    # Outputs that touch secrets carry ARNs/names only.
    for name in ("secret_arns", "rds_master_secret_arn"):
        values = value[name].values() if isinstance(value[name], dict) else [value[name]]
        assert all(v.startswith("arn:aws:secretsmanager:") for v in values), name
    assert all(v.startswith("cta/dev/") for v in value["secret_names"].values())


def check_destroyed(url: str, outputs: dict[str, Any]) -> None:
    value = {k: v["value"] for k, v in outputs.items()}
    buckets = {b["Name"] for b in boto("s3", url).list_buckets()["Buckets"]}
    assert not buckets & {value["lake_bucket"], value["artifacts_bucket"]}
    assert boto("secretsmanager", url).list_secrets()["SecretList"] == []
    assert boto("ecr", url).describe_repositories()["repositories"] == []
    assert boto("eks", url).list_clusters()["clusters"] == []
    assert boto("rds", url).describe_db_instances()["DBInstances"] == []
    roles = {r["RoleName"] for r in boto("iam", url).list_roles()["Roles"]}
    assert not {r for r in roles if r.startswith("cta-dev")}
    assert boto("logs", url).describe_log_groups(logGroupNamePrefix="/cta/dev/")["logGroups"] == []
    key = boto("kms", url).describe_key(KeyId=value["kms_key_arn"])["KeyMetadata"]
    assert key["KeyState"] == "PendingDeletion"
    assert boto("ec2", url).describe_vpcs(Filters=[{"Name": "tag:Name", "Values": ["cta-dev"]}])["Vpcs"] == []


# ----- checkov -----------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_checkov_clean(tmp_path: Path, checkov: Path) -> None:
    tree = copy_module(AWS, tmp_path / "aws")
    result = subprocess.run(
        [str(checkov), "--framework", "terraform", "-d", str(tree), "--quiet", "--compact", "--output", "json"],
        env={**os.environ, **CHECKOV_ENV},
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    reports = json.loads(result.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    failed = [
        f"{c['check_id']} {c['resource']} {c['file_path']}"
        for r in reports
        for c in r.get("results", {}).get("failed_checks", [])
    ]
    assert not failed, "\n".join(failed)
    assert result.returncode == 0, result.stderr[-4000:]
    skipped = [c for r in reports for c in r.get("results", {}).get("skipped_checks", [])]
    assert all(c.get("suppress_comment", "").strip() for c in skipped), "every skip carries its reason"
    passed = sum(r.get("summary", {}).get("passed", 0) for r in reports)
    assert passed > 100, "checkov scanned the modules"
