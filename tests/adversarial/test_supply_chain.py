"""Issue 19, item 11: the locked dependency set (requirements.lock, with hashes) and the known-vulnerability audit.

The lock must pin exactly what the project venv holds, with hashes; the audit runs pip-audit over it (slow) and
is skipped only when no vulnerability service is reachable, with the reason."""

from __future__ import annotations

import socket
from importlib import metadata

import pytest
from packaging.utils import canonicalize_name

from deploy.supply_chain import LOCK_FILE, audit, locked_versions, unreachable_reason


def requirement_blocks() -> dict[str, list[str]]:
    """name==version -> its --hash lines."""
    blocks: dict[str, list[str]] = {}
    current = ""
    for line in LOCK_FILE.read_text().splitlines():
        if line and line[0] not in " #":
            current = line.split(" ")[0]
            blocks[current] = []
        elif "--hash=sha256:" in line:
            blocks[current].append(line.strip())
    return blocks


def test_every_locked_package_is_pinned_with_hashes() -> None:
    blocks = requirement_blocks()
    assert len(blocks) > 100
    assert all("==" in pin for pin in blocks), [pin for pin in blocks if "==" not in pin]
    assert not [pin for pin, hashes in blocks.items() if not hashes]
    assert any(pin.startswith("torch==") and pin.endswith("+cpu") for pin in blocks)  # never a CUDA build


def test_the_lock_pins_what_the_project_venv_holds() -> None:
    locked = {canonicalize_name(name): version for name, version in locked_versions().items()}
    installed = {
        canonicalize_name(dist.metadata["Name"]): dist.version
        for dist in metadata.distributions()
        if dist.metadata["Name"] and canonicalize_name(dist.metadata["Name"]) not in {"cta", "pip"}
    }
    missing = sorted(name for name in installed if name not in locked)
    differ = sorted(f"{n}: venv {v} lock {locked[n]}" for n, v in installed.items() if n in locked and locked[n] != v)
    assert not missing and not differ, (
        f"requirements.lock is stale (regenerate: python -m deploy.supply_chain lock): "
        f"not locked {missing}, different {differ}"
    )


def test_no_reachable_service_is_said_plainly_not_as_a_clean_audit() -> None:
    with socket.socket() as closed:  # a local port nothing listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    reason = unreachable_reason(f"http://127.0.0.1:{port}/pypi/pip/24.0/json", f"http://127.0.0.1:{port}/v1/query", 5)
    assert reason is not None and reason.startswith("no vulnerability service is reachable")
    assert "pypi" in reason.lower() and "OSV" in reason


@pytest.mark.slow
def test_the_locked_set_has_no_known_vulnerability() -> None:
    reason = unreachable_reason()
    if reason:
        pytest.skip(f"dependency audit not run: {reason}")
    findings = audit()
    assert not findings, "\n".join(f"{f.id}: {f.advice()}" for f in findings)
