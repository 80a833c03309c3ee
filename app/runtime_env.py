"""Process environment for the offline stack: every library writes inside the project's data dir,
and no telemetry leaves the machine. Called once by entry points (CLI, tests), never at import."""

from __future__ import annotations

import os
from pathlib import Path

from flows.deployments import HEARTBEAT_S

OFFLINE_DEFAULTS: dict[str, str] = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",
    "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_AUTH_MODE": "disabled",
    "RLLIB_TEST_NO_TF_IMPORT": "1",
    "TF_CPP_MIN_LOG_LEVEL": "3",  # TensorFlow's C++ chatter; real failures still raise in Python
    # oneDNN's CPU kernels sum in an order that depends on thread scheduling: a loaded machine then trains
    # a (slightly) different model from the same seed. Off, a seed gives one model (tested).
    "TF_ENABLE_ONEDNN_OPTS": "0",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    # A tracking server that serves artifacts from S3 advertises "multipart downloads": MLflow's client then asks
    # it for presigned URLs and fetches every artifact straight from the bucket. Off, every byte goes through the
    # server, so clients need its URL only, never a route to the storage (tests/production/test_mlflow_server.py).
    "MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD": "false",
    "GX_ANALYTICS_ENABLED": "false",
    # Every flow run of a CTA process tells the server it is alive this often; `cta flows deploy` installs an
    # automation that marks a run Crashed after 3 missed heartbeats (its process died without a word).
    "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(HEARTBEAT_S),
}


def apply_offline_env(data_dir: Path) -> None:
    """Set defaults (never overriding what the user exported) for library homes and telemetry."""
    data_dir = data_dir.resolve()
    homes = {
        "PREFECT_HOME": data_dir / "prefect",
        "KERAS_HOME": data_dir / "keras",
        "MPLCONFIGDIR": data_dir / "matplotlib",
        "TORCHINDUCTOR_CACHE_DIR": data_dir / "torchinductor",
    }
    for name, value in {**OFFLINE_DEFAULTS, **{k: str(v) for k, v in homes.items()}}.items():
        os.environ.setdefault(name, value)
    for name in homes:
        Path(os.environ[name]).mkdir(parents=True, exist_ok=True)
    no_proxy = {h for h in os.environ.get("NO_PROXY", "").split(",") if h}
    os.environ["NO_PROXY"] = ",".join(sorted(no_proxy | {"127.0.0.1", "localhost"}))
    os.environ["no_proxy"] = os.environ["NO_PROXY"]
