"""Fixtures for the infrastructure tests: terraform against the machine's local provider mirror, checkov in its own
tool venv (deploy/images.py), kustomize through kubectl. Every tool runs for real; a missing one fails the test with
what to install, it is not skipped."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
INFRA = REPO_ROOT / "infra"
# The hashicorp/aws provider on this machine: a filesystem mirror, <root>/registry.terraform.io/hashicorp/aws/...
DEFAULT_PROVIDER_MIRROR = "/opt/tf-plugins"


def require_binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(
            f"{name} is not on PATH: these tests run the real tool (see ../shared/notes/deploy-offline-facts.md)"
        )
    return path


def provider_mirror() -> Path:
    mirror = Path(os.environ.get("CTA_TF_PROVIDER_MIRROR", DEFAULT_PROVIDER_MIRROR))
    if not (mirror / "registry.terraform.io" / "hashicorp" / "aws").is_dir():
        pytest.fail(f"no hashicorp/aws provider mirror under {mirror} (set CTA_TF_PROVIDER_MIRROR to its root)")
    return mirror


@pytest.fixture(scope="session")
def terraform_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The environment terraform runs in: a CLI config that installs providers only from the local mirror (never the
    registry), a shared plugin cache (init links instead of copying the ~700 MB provider), no update checks."""
    require_binary("terraform")
    home = tmp_path_factory.mktemp("terraform")
    cache = home / "plugin-cache"
    cache.mkdir()
    config = home / "terraformrc"
    config.write_text(
        "provider_installation {\n"
        f'  filesystem_mirror {{\n    path = "{provider_mirror()}"\n  }}\n'
        "}\n"
        f'plugin_cache_dir = "{cache}"\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TF_", "AWS_"))}
    env.update(
        TF_CLI_CONFIG_FILE=str(config),
        TF_IN_AUTOMATION="1",
        TF_INPUT="0",
        CHECKPOINT_DISABLE="1",
        TF_PLUGIN_CACHE_MAY_BREAK_DEPENDENCY_LOCK_FILE="1",
    )
    return env


def run_tool(
    args: Sequence[str | Path], *, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """Run a tool; on a non-zero exit fail the test with its output (the tool's own message is the diagnosis)."""
    result = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    if result.returncode != 0:
        pytest.fail(
            f"{' '.join(str(a) for a in args)} exited {result.returncode} in {cwd}\n"
            f"--- stdout\n{result.stdout[-8000:]}\n--- stderr\n{result.stderr[-8000:]}"
        )
    return result


def copy_module(source: Path, destination: Path) -> Path:
    """A terraform root copied out of the repository, so `init` never writes .terraform/ or state into the tree."""
    shutil.copytree(source, destination, ignore=shutil.ignore_patterns(".terraform*", "*.tfstate*"))
    return destination


@pytest.fixture(scope="session")
def checkov() -> Path:
    """checkov in its own venv under the cache dir (its pins conflict with the project's): deploy/images.py."""
    from deploy.images import ensure_checkov

    return ensure_checkov()


CHECKOV_ENV = {"BC_SKIP_MAPPING": "TRUE", "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false", "PYTHONWARNINGS": "ignore"}
