"""The supply chain: the locked dependency set and a known-vulnerability audit of it.

- `lock()`: `requirements.lock` at the repo root, every package of pyproject's runtime + ml + dev extras pinned
  to the version the project venv holds, each with its sha256 hashes (uv pip compile --generate-hashes, for
  CPython 3.11 on x86_64 manylinux; torch is the local CPU wheel). Run it again after changing pyproject.toml
  and reinstalling the venv.
- `audit()`: pip-audit over the locked versions, against the first vulnerability service that answers here
  (PyPI's per-release JSON API, then OSV). When neither answers it says so and exits 2: "no known
  vulnerabilities" is never printed for an audit that could not ask.

Both tools live in their own venv under ${CTA_CACHE_DIR:-~/.cache/cta}/tools/ (like checkov in deploy/images.py):
the project venv's installed set is never touched.

CLI: `python -m deploy.supply_chain lock`, `... audit` (`make audit`), `... probe` (which service answers).
Exit codes of `audit`: 0 no known vulnerability, 1 some found (each with the fixed versions to upgrade to),
2 no vulnerability service reachable (the reason is printed).
"""

# ruff: noqa: S603  (this module runs pip, uv and pip-audit with fixed arguments)

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from deploy.images import _venv_constraints, cache_dir

REPO_ROOT = Path(__file__).resolve().parent.parent
LOCK_FILE = REPO_ROOT / "requirements.lock"
PIP_AUDIT_VERSION = "2.10.1"
UV_VERSION = "0.13.8"
EXTRAS = ("ml", "dev")
PYTHON_VERSION = "3.11"
PLATFORM = "x86_64-manylinux_2_28"
# What each pip-audit service asks (pip_audit/_service): PyPI's JSON API per release, OSV's query API.
PYPI_PROBE = "https://pypi.org/pypi/pip/24.0/json"
OSV_PROBE = "https://api.osv.dev/v1/query"
EXIT_UNREACHABLE = 2


def log(message: str) -> None:
    print(f"[supply-chain] {message}", file=sys.stderr, flush=True)


def tool_venv() -> Path:
    """pip-audit and uv in a venv of their own (created on first use); its directory."""
    venv = cache_dir() / "tools" / f"audit-pip-audit-{PIP_AUDIT_VERSION}-uv-{UV_VERSION}"
    if (venv / "bin" / "pip-audit").exists() and (venv / "bin" / "uv").exists():
        return venv
    log(f"creating the tool venv {venv}")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    pins = [f"pip-audit=={PIP_AUDIT_VERSION}", f"uv=={UV_VERSION}"]
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", *pins], check=True, timeout=1800)
    return venv


def _pip_find_links() -> list[str]:
    """The local wheel directories pip is configured with (the CPU torch wheel lies there); uv reads no pip.conf."""
    out = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, check=False, timeout=60
    ).stdout
    links: list[str] = []
    for line in out.splitlines():
        key, _, value = line.partition("=")
        if key.endswith("find-links"):
            links += [v for v in value.strip("'\"").split() if Path(v).is_dir() and v not in links]
    return links


def lock(out: Path = LOCK_FILE) -> Path:
    """Write `out`: the locked set with hashes, pinned to what the project venv (this interpreter) holds."""
    uv = tool_venv() / "bin" / "uv"
    with tempfile.TemporaryDirectory() as tmp:
        constraints = Path(tmp) / "constraints.txt"
        constraints.write_text("\n".join(_venv_constraints()) + "\n")
        cmd = [str(uv), "pip", "compile", str(REPO_ROOT / "pyproject.toml"), "--generate-hashes", "--no-annotate"]
        cmd += [arg for extra in EXTRAS for arg in ("--extra", extra)]
        cmd += ["-c", str(constraints), "--python-version", PYTHON_VERSION, "--python-platform", PLATFORM]
        cmd += [arg for link in _pip_find_links() for arg in ("--find-links", link)]
        cmd += ["--custom-compile-command", "python -m deploy.supply_chain lock", "-o", str(out)]
        subprocess.run(cmd, check=True, timeout=1800, cwd=REPO_ROOT, capture_output=True, text=True)
    log(f"wrote {out}")
    return out


def locked_versions(path: Path = LOCK_FILE) -> dict[str, str]:
    """name -> version of every requirement in the lock file (markers kept out)."""
    versions: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if not line or line[0] in " #-":
            continue
        requirement = line.split(";")[0].split(" ")[0].strip()
        name, sep, version = requirement.partition("==")
        if sep:
            versions[name] = version
    return versions


def unreachable_reason(pypi_probe: str = PYPI_PROBE, osv_probe: str = OSV_PROBE, timeout: float = 15) -> str | None:
    """None when a vulnerability service answers (the first such is used), else why neither does."""
    reasons: list[str] = []
    try:
        with urllib.request.urlopen(pypi_probe, timeout=timeout) as answer:  # noqa: S310  fixed https URL
            if "vulnerabilities" in json.loads(answer.read()):
                return None
            reasons.append(f"{pypi_probe} answered without a 'vulnerabilities' field")
    except (urllib.error.URLError, OSError, ValueError) as e:
        reasons.append(f"PyPI's per-release JSON API ({pypi_probe}, what pip-audit's 'pypi' service reads): {e}")
    request = urllib.request.Request(  # noqa: S310  fixed https URL
        osv_probe, data=b'{"package": {"name": "pip", "ecosystem": "PyPI"}, "version": "24.0"}', method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout):  # noqa: S310
            return None
    except (urllib.error.URLError, OSError, ValueError) as e:
        reasons.append(f"OSV ({osv_probe}): {e}")
    return "no vulnerability service is reachable: " + "; ".join(reasons)


def service(pypi_probe: str = PYPI_PROBE) -> str:
    """The pip-audit service to use: "pypi" when PyPI's per-release API answers, else "osv"."""
    try:
        with urllib.request.urlopen(pypi_probe, timeout=15):  # noqa: S310
            return "pypi"
    except (urllib.error.URLError, OSError):
        return "osv"


@dataclass(frozen=True)
class Finding:
    package: str
    version: str
    id: str
    fix_versions: tuple[str, ...]

    def advice(self) -> str:
        if self.fix_versions:
            fixed = ", ".join(self.fix_versions)
            return f"upgrade {self.package} {self.version} -> {self.fix_versions[0]} (fixed in {fixed})"
        return f"{self.package} {self.version}: no fixed version yet: assess exposure, pin or replace"


def audit(path: Path = LOCK_FILE) -> list[Finding]:
    """pip-audit over the locked versions (no resolution, no install): the known vulnerabilities. ConnectionError
    naming the reason when no vulnerability service answers; RuntimeError when pip-audit could not audit every
    locked package (--strict)."""
    reason = unreachable_reason()
    if reason:
        raise ConnectionError(reason)
    venv = tool_venv()
    with tempfile.TemporaryDirectory() as tmp:
        # The vulnerabilities of a release apply to its local builds (torch 2.13.0+cpu is torch 2.13.0).
        pins = Path(tmp) / "pins.txt"
        pins.write_text("".join(f"{n}=={v.split('+')[0]}\n" for n, v in sorted(locked_versions(path).items())))
        report = Path(tmp) / "report.json"
        cmd = [str(venv / "bin" / "pip-audit"), "--requirement", str(pins), "--no-deps", "--disable-pip", "--strict"]
        cmd += ["--vulnerability-service", service(), "--progress-spinner", "off", "--format", "json"]
        cmd += ["--output", str(report)]
        result = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=1800)
        if not report.exists():
            raise RuntimeError(f"pip-audit exited {result.returncode}: {(result.stdout + result.stderr)[-2000:]}")
        data = json.loads(report.read_text())
    return [
        Finding(dep["name"], dep["version"], vuln["id"], tuple(vuln.get("fix_versions", ())))
        for dep in data.get("dependencies", [])
        for vuln in dep.get("vulns", [])
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.supply_chain", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["lock", "audit", "probe"])
    args = parser.parse_args(argv)
    if args.command == "lock":
        lock()
        return 0
    if args.command == "probe":
        reason = unreachable_reason()
        print(reason or f"reachable: pip-audit's {service()!r} service")
        return EXIT_UNREACHABLE if reason else 0
    try:
        findings = audit()
    except ConnectionError as e:
        print(f"audit not run: {e}", file=sys.stderr)
        return EXIT_UNREACHABLE
    print(f"{len(locked_versions())} locked packages audited: {len(findings)} known vulnerabilities")
    for finding in findings:
        print(f"  {finding.id}: {finding.advice()}")
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
