"""The layers are enforced: import-linter checks the contracts in pyproject.toml ([tool.importlinter]) on the
repository, and the same check, run on a small tree with one wrong arrow, fails naming both ends of it."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = REPO_ROOT / "pyproject.toml"
# `lint-imports` with this interpreter (the venv's), run in `cwd`: import-linter reads `cwd/pyproject.toml` and
# finds the root packages in `cwd` first.
LINT_IMPORTS = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"


def lint_imports(cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", LINT_IMPORTS, "--no-cache", "--no-logo"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def importlinter_config() -> dict[str, object]:
    config: dict[str, object] = tomllib.loads(PYPROJECT.read_text())["tool"]["importlinter"]
    return config


def importlinter_section() -> str:
    """The [tool.importlinter] tables of pyproject.toml, as written there."""
    kept: list[str] = []
    keep = False
    for line in PYPROJECT.read_text().splitlines():
        if line.startswith("["):
            keep = line.lstrip("[").startswith("tool.importlinter")
        if keep:
            kept.append(line)
    return "\n".join(kept) + "\n"


def test_the_repository_keeps_its_layers() -> None:
    result = lint_imports(REPO_ROOT)
    report = result.stdout + result.stderr
    assert result.returncode == 0, f"an import breaks the layers (importer -> imported below):\n{report}"
    contracts = importlinter_config()["contracts"]
    assert isinstance(contracts, list)
    assert f"{len(contracts)} kept, 0 broken" in report, report


@pytest.mark.parametrize(
    ("importer", "imported"),
    [
        ("cta", "serving"),  # the core imports a stage
        ("features", "training"),  # features import a stage above them
        ("training", "backtests"),  # one stage imports a sibling
        ("flows", "app"),  # a flow imports the composition root
    ],
)
def test_a_wrong_arrow_fails_the_check(tmp_path: Path, importer: str, imported: str) -> None:
    section = importlinter_section()
    assert tomllib.loads(section)["tool"]["importlinter"] == importlinter_config()
    (tmp_path / "pyproject.toml").write_text(section)
    packages = importlinter_config()["root_packages"]
    assert isinstance(packages, list)
    for package in packages:  # every root package here, so none is taken from the installed repository
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    # A lazy import inside a function: import-linter sees those too.
    (tmp_path / importer / "bad.py").write_text(f"def later() -> None:\n    import {imported}\n")

    result = lint_imports(tmp_path)
    report = result.stdout + result.stderr
    assert result.returncode != 0, report
    assert "BROKEN" in report, report
    assert f"{importer}.bad -> {imported}" in report, report
