"""Start (or reuse) a local Prefect server, for schedules and the UI (the ephemeral API runs no
schedules)."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from cta.errors import CTAError

log = logging.getLogger(__name__)


def prefect_healthy(api_url: str, timeout_s: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"{api_url.rstrip('/')}/health", timeout=timeout_s) as response:  # noqa: S310
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _die_with_parent() -> None:
    """In the child: ask Linux to SIGTERM it when the parent dies, so no server is ever orphaned."""
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def start_prefect_server(port: int, home: Path, wait_s: float = 120.0) -> tuple[subprocess.Popen[bytes], str]:
    """Run `prefect server start` on 127.0.0.1:port with its SQLite DB under `home`; wait for health."""
    api_url = f"http://127.0.0.1:{port}/api"
    home.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home / 'server.db'}",
    }
    env.pop("PREFECT_API_URL", None)
    log_file = (home / "server.log").open("ab")
    process = subprocess.Popen(  # noqa: S603
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        preexec_fn=_die_with_parent if sys.platform == "linux" else None,  # noqa: PLW1509
    )
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise CTAError(f"prefect server exited with code {process.returncode}; see {home / 'server.log'}")
        if prefect_healthy(api_url):
            log.info("Prefect server up at %s (UI: http://127.0.0.1:%d)", api_url, port)
            return process, api_url
        time.sleep(0.5)
    process.terminate()
    raise CTAError(f"prefect server did not become healthy within {wait_s:.0f}s; see {home / 'server.log'}")
