"""Shared fixtures. Real components only: the local exchange over HTTP, GX, Prefect, moto's S3 server."""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cta.config import Settings, load_settings
from cta.lake import CandleLake
from cta.quarantine import Quarantine
from cta.storage import LocalStorage

pytest_plugins = ["tests.exchange_fixtures"]

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = REPO_ROOT / "config"


def pytest_configure(config: pytest.Config) -> None:
    """The test process's environment: every library home in a temp dir, no telemetry, no user CTA_*."""
    from app.runtime_env import apply_offline_env

    for name in [n for n in os.environ if n.startswith("CTA_") and n != "CTA_CACHE_DIR"]:  # the images' build cache
        del os.environ[name]
    os.environ.pop("PREFECT_API_URL", None)
    apply_offline_env(Path(tempfile.mkdtemp(prefix="cta-test-home-")))


@pytest.fixture
def settings_for(tmp_path: Path) -> Any:
    """Settings whose every file goes under `tmp_path`, built the way the CLI builds them (the repo's
    config files, then explicit overrides; no CTA_* environment). Tests hand the object to the flows.

    Returns a function `(**sections) -> Settings`, e.g. `settings_for(exchange={"api_url": url})`.
    """

    def build(**sections: dict[str, Any]) -> Settings:
        base: dict[str, dict[str, Any]] = {
            "paths": {"data_dir": str(tmp_path / "data"), "logs_dir": str(tmp_path / "logs")},
            "lake": {"uri": str(tmp_path / "lake")},
            "validation": {"quarantine_uri": str(tmp_path / "quarantine"), "results_dir": str(tmp_path / "validation")},
            "ingest": {"backoff_base_s": 0.05, "backoff_max_s": 2.0},
        }
        for section, values in sections.items():
            base[section] = {**base.get(section, {}), **values}
        return load_settings(env={}, config_dir=CONFIG_DIR, overrides=base)

    return build


@pytest.fixture
def lake(tmp_path: Path) -> CandleLake:
    return CandleLake(LocalStorage(tmp_path / "lake"))


@pytest.fixture
def quarantine(tmp_path: Path) -> Quarantine:
    return Quarantine(LocalStorage(tmp_path / "quarantine"))


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """A real (temporary, SQLite) Prefect API for flow tests."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


@pytest.fixture(scope="session")
def moto_s3() -> Iterator[str]:
    """moto in server mode on a free loopback port; yields the endpoint URL."""
    with moto_server() as url:
        yield url


@contextlib.contextmanager
def moto_server(**env: str) -> Iterator[str]:
    """A moto server on a free loopback port (`env`: moto's settings, e.g. MOTO_IAM_LOAD_MANAGED_POLICIES); yields
    its URL, stops it after."""
    import socket
    import sys
    import time
    import urllib.request

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env={**os.environ, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(url, timeout=1)
            break
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                raise RuntimeError("moto server did not start") from None
            time.sleep(0.2)
    try:
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def postgres_database(prefix: str) -> Iterator[str]:
    """A new, empty database on the machine's PostgreSQL (127.0.0.1:5432, trust auth), dropped afterwards
    (with whatever still holds a connection to it); yields its name."""
    import uuid

    import psycopg2

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname="test")
    admin.autocommit = True
    try:
        with admin.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{name}"')
        yield name
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def subprocess_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment of a `cta` subprocess whose every file goes under `tmp_path`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CTA_", "PREFECT_API_URL"))}
    env.update(
        {
            "CTA_CONFIG_DIR": str(CONFIG_DIR),
            "CTA_PATHS__DATA_DIR": str(tmp_path / "data"),
            "CTA_PATHS__LOGS_DIR": str(tmp_path / "logs"),
            "CTA_LAKE__URI": str(tmp_path / "lake"),
            "CTA_VALIDATION__QUARANTINE_URI": str(tmp_path / "quarantine"),
            "CTA_VALIDATION__RESULTS_DIR": str(tmp_path / "validation"),
            "CTA_FEATURES__TABLE_DIR": str(tmp_path / "features"),
            "CTA_FEATURES__FEAST_DIR": str(tmp_path / "feast"),
            "COLUMNS": "200",
            # Prefect's temporary server per command: a test leaves no server running (the persistent local
            # server is tested where it is meant: test_local_servers.py, test_flows_serve.py)
            "CTA_PREFECT__LOCAL_SERVER": "ephemeral",
            **extra,
        }
    )
    return env


def run_cta(*args: str, env: dict[str, str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """`cta ARGS` in a subprocess; fails the test with the command's output tail unless it exits 0."""
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, f"cta {' '.join(args)}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def load_test_settings(**overrides: Any) -> Settings:
    """Settings from the repo's config files with no environment influence."""
    return load_settings(env={}, config_dir=CONFIG_DIR, overrides=overrides or None)
