"""The local servers a user looks at: one Prefect server (runs, schedules, the work pool) and one MLflow UI.

Started on first use and kept running (a new session, detached from the command that started it), recorded in
`<home>/server.json` (pid, port, URL), reused by every later command, stopped by `cta down`. So every flow run
a command makes lands in the one database the served UI reads, and a command starts its work in about a
second instead of waiting for Prefect's temporary server.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlparse

from cta.config import Settings
from cta.errors import CTAError

log = logging.getLogger(__name__)

STATE_FILE = "server.json"
LOCAL_HOSTS = ("127.0.0.1", "localhost")


@dataclass(frozen=True)
class LocalServer:
    name: str
    pid: int
    port: int
    url: str  # what a user opens (the UI)
    health_url: str


def healthy(url: str, timeout_s: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def prefect_healthy(api_url: str, timeout_s: float = 2.0) -> bool:
    return healthy(f"{api_url.rstrip('/')}/health", timeout_s)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def recorded(home: Path) -> LocalServer | None:
    """The server recorded under `home`, if its process is alive and it answers its health check."""
    try:
        server = LocalServer(**json.loads((home / STATE_FILE).read_text()))
    except (OSError, ValueError, TypeError):
        return None
    if _alive(server.pid) and healthy(server.health_url):
        return server
    return None


def start_detached(
    name: str,
    command: list[str],
    *,
    env: dict[str, str],
    home: Path,
    port: int,
    url: str,
    health_url: str,
    wait_s: float,
) -> LocalServer:
    """Start `command` in its own session (it outlives this process), log to `<home>/server.log`, wait until
    `health_url` answers, record it. A port already answering is refused: it is not ours to reuse."""
    home.mkdir(parents=True, exist_ok=True)
    if healthy(health_url):
        raise CTAError(
            f"{name}: port {port} already answers, but not for a server this data dir started; "
            "stop that server or choose another port"
        )
    log_path = home / "server.log"
    with log_path.open("ab") as log_file:
        process = subprocess.Popen(  # noqa: S603
            command,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise CTAError(f"{name} exited with code {process.returncode} at start; see {log_path}")
        if healthy(health_url):
            server = LocalServer(name=name, pid=process.pid, port=port, url=url, health_url=health_url)
            (home / STATE_FILE).write_text(json.dumps(asdict(server)))
            log.info("%s started at %s (pid %d, log %s)", name, url, process.pid, log_path)
            return server
        time.sleep(0.3)
    _terminate(process.pid)
    raise CTAError(f"{name} did not answer within {wait_s:.0f}s; see {log_path}")


def _terminate(pid: int, wait_s: float = 20.0) -> None:
    """SIGTERM the server's process group (it leads its own session), then SIGKILL if it lingers."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            try:
                waited, _ = os.waitpid(pid, os.WNOHANG)  # our child when started by this process
            except ChildProcessError:
                waited = 0
            if waited == pid or not _alive(pid):
                return
            time.sleep(0.2)


def stop(home: Path) -> LocalServer | None:
    """Stop the server recorded under `home` (and forget it); the one stopped, or None."""
    state = home / STATE_FILE
    try:
        server = LocalServer(**json.loads(state.read_text()))
    except (OSError, ValueError, TypeError):
        return None
    if _alive(server.pid):
        _terminate(server.pid)
    state.unlink(missing_ok=True)
    return server


# --- Prefect ---------------------------------------------------------------------------------------------


def prefect_home(settings: Settings) -> Path:
    return settings.paths.data_dir.resolve() / "prefect"


def _prefect_server_env(settings: Settings, home: Path) -> dict[str, str]:
    database = settings.prefect.database_url or f"sqlite+aiosqlite:///{home / 'server.db'}"
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_DATABASE_CONNECTION_URL": database,
        "PREFECT_UI_SHOW_PROMOTIONAL_CONTENT": "false",
    }
    env.pop("PREFECT_API_URL", None)
    return env


def start_prefect(settings: Settings, port: int, wait_s: float = 180.0) -> LocalServer:
    """`prefect server start` on 127.0.0.1:port, detached, on the configured database (SQLite by default)."""
    home = prefect_home(settings)
    api_url = f"http://127.0.0.1:{port}/api"
    command = [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    return start_detached(
        "Prefect server",
        command,
        env=_prefect_server_env(settings, home),
        home=home,
        port=port,
        url=api_url.removesuffix("/api"),
        health_url=f"{api_url}/health",
        wait_s=wait_s,
    )


def prefect_api_url(settings: Settings, start: bool = True) -> str | None:
    """The Prefect API this process's flow runs go to, exported as PREFECT_API_URL (Prefect's client reads it).

    PREFECT_API_URL in the environment wins; then `prefect.api_url` (started here if it is a local address that
    does not answer); then the API Prefect already uses in this process, if any; then the data dir's
    persistent local server (started on first use). None with `prefect.local_server = "ephemeral"`: Prefect
    then runs its own temporary server for this process.
    """
    explicit = os.environ.get("PREFECT_API_URL") or settings.prefect.api_url or _prefect_profile_api_url()
    if explicit:
        if not prefect_healthy(explicit):
            parsed = urlparse(explicit)
            if not start or parsed.hostname not in LOCAL_HOSTS or parsed.port is None:
                raise CTAError(f"the Prefect API at {explicit} is not reachable")
            server = recorded(prefect_home(settings))
            if server is None or server.port != parsed.port:
                start_prefect(settings, parsed.port)
        return _export(explicit)
    if settings.prefect.local_server == "ephemeral":
        return None
    server = recorded(prefect_home(settings))
    if server is None:
        if not start:
            return None
        server = start_prefect(settings, settings.prefect.server_port)
    return _export(f"{server.url}/api")


def _export(api_url: str) -> str:
    """PREFECT_API_URL for Prefect's client, which reads its settings once, when `prefect` is imported: a
    command that imported a flow before choosing its server would silently use another one, so that fails."""
    os.environ["PREFECT_API_URL"] = api_url
    current = _prefect_profile_api_url()
    if "prefect.context" in sys.modules and current != api_url:
        raise CTAError(f"internal: Prefect was imported before its server was chosen ({current} != {api_url})")
    return api_url


def _prefect_profile_api_url() -> str | None:
    """The API URL Prefect is already using in this process (a test harness, an embedding application), if
    Prefect is imported: it reads its settings once, at import, so a PREFECT_API_URL exported after that would
    be ignored. Not imported: None (importing it here would freeze its settings before we export ours)."""
    if "prefect.settings" not in sys.modules:
        return None
    from prefect.settings import PREFECT_API_URL

    value = PREFECT_API_URL.value()
    return str(value) if value else None


# --- MLflow UI -------------------------------------------------------------------------------------------


def mlflow_home(settings: Settings) -> Path:
    return settings.paths.data_dir.resolve() / "mlflow"


def mlflow_ui(settings: Settings, start: bool = True, wait_s: float = 120.0) -> str | None:
    """The MLflow UI's URL: the tracking server itself when `training.tracking_uri` is one, else a local
    `mlflow server` over the tracking store on 127.0.0.1:`training.ui_port` (started on first use)."""
    uri = settings.training.tracking_uri
    if uri.startswith(("http://", "https://")):
        return uri
    home = mlflow_home(settings)
    server = recorded(home)
    if server is not None:
        return server.url
    if not start:
        return None
    port = settings.training.ui_port
    artifacts = Path(settings.training.artifact_root).resolve()
    artifacts.mkdir(parents=True, exist_ok=True)
    command = [
        *[sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port)],
        *["--backend-store-uri", uri, "--default-artifact-root", str(artifacts), "--workers", "1"],
    ]
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true"}
    url = f"http://127.0.0.1:{port}"
    server = start_detached(
        "MLflow UI", command, env=env, home=home, port=port, url=url, health_url=f"{url}/health", wait_s=wait_s
    )
    return server.url
