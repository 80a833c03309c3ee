"""MLflow training runs: runs with full lineage, models registered per market (names in cta.registry).

Every run records: the config hash, the feature registry version, the lake content hashes of its
data (a JSON artifact and a combined hash tag), the git commit, the seed, the training window. A
run that raises is ended FAILED with the error as a tag, never left RUNNING.

No secret reaches a param or a tag: the settings are logged only as their hash (which leaves the secrets out),
and every tag and param value (the error text above all: an exception may quote a key, a token or a URL with
its password) goes through `scrubbed`, the log redaction of the configured secrets plus URL passwords masked.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cloudpickle
import mlflow
from mlflow.models import infer_signature

from cta.config import Settings, mask_url_password
from cta.logs import RedactingFilter
from cta.registry import ensure_experiment, registered_model_name
from features.dataset import Dataset
from training.contract import POSITION

log = logging.getLogger(__name__)

BASE_REQUIREMENTS = ["numpy", "pandas", "cloudpickle"]
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")


def scrubbed(settings: Settings, value: object) -> str:
    """`value` as text fit for an MLflow param or tag: every configured secret replaced (as log records are),
    key=value and Bearer credentials redacted, and the password of any URL in it masked."""
    text = RedactingFilter(settings.secrets.values()).redact(str(value))
    return _URL.sub(lambda match: mask_url_password(match.group(0)), text)


def log_params(settings: Settings, params: dict[str, Any]) -> None:
    """mlflow.log_params, each value scrubbed (`scrubbed`)."""
    mlflow.log_params({key: scrubbed(settings, value) for key, value in params.items()})


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],  # noqa: S607 (git from PATH, as a developer runs it)
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).resolve().parent,
            timeout=5,
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def data_hash(lineage: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(lineage, sort_keys=True).encode()).hexdigest()[:16]


@contextlib.contextmanager
def training_run(
    settings: Settings, dataset: Dataset, family: str, registry_version: str, params: dict[str, Any]
) -> Iterator[Any]:
    """An MLflow run carrying the lineage tags; ended FAILED (with the error) if the body raises."""
    experiment_id = ensure_experiment(settings, dataset.market)
    run = mlflow.start_run(experiment_id=experiment_id, run_name=f"{family}-{dataset.market}")
    try:
        window = f"{int(dataset.ts[0])}-{int(dataset.ts[-1])}"
        tags = {
            "family": family,
            "market": str(dataset.market),
            "config_hash": settings.config_hash(),
            "feature_registry_version": registry_version,
            "data_hash": data_hash(dataset.lineage),
            "git_commit": git_commit(),
            "seed": str(settings.training.seed),
            "training_window_ms": window,
        }
        mlflow.set_tags({key: scrubbed(settings, value) for key, value in tags.items()})
        log_params(
            settings, {**params, "seed": settings.training.seed, "label_horizon": dataset.horizon, "rows": len(dataset)}
        )
        mlflow.log_dict({"lake_partitions": dataset.lineage, "market": str(dataset.market)}, "lineage.json")
        yield run
    except BaseException as e:
        mlflow.set_tag("error", scrubbed(settings, f"{type(e).__name__}: {e}")[:5000])
        mlflow.end_run(status="FAILED")
        raise
    else:
        mlflow.end_run(status="FINISHED")


def log_position_model(
    python_model: Any,
    dataset: Dataset,
    *,
    family: str,
    pip_requirements: list[str],
    history_rows: int = 1,
    stateful: bool = False,
    artifacts: dict[str, str] | None = None,
) -> Any:
    """Log the pyfunc (signature: features -> position) and register it as a new version of the
    market's model, tagged with its family, window and data hash. Returns the ModelVersion.

    The wrapper's module is pickled by value, so the serving process loads the model without
    importing `training` (or anything of CTA's)."""
    cloudpickle.register_pickle_by_value(sys.modules[type(python_model).__module__])
    example = dataset.X.head(max(history_rows, 5))
    signature = infer_signature(example, python_model.predict(None, example).astype("float64"))
    name = registered_model_name(dataset.market)
    info = mlflow.pyfunc.log_model(
        name="model",
        python_model=python_model,
        artifacts=artifacts,
        signature=signature,
        input_example=example,
        pip_requirements=[*BASE_REQUIREMENTS, *pip_requirements],
        registered_model_name=name,
        metadata={"history_rows": history_rows, "output": POSITION, "family": family, "stateful": stateful},
    )
    client = mlflow.MlflowClient()
    version = client.get_model_version(name, str(info.registered_model_version))
    for key, value in {
        "family": family,
        "data_hash": data_hash(dataset.lineage),
        "training_window_ms": f"{int(dataset.ts[0])}-{int(dataset.ts[-1])}",
        "run_id": info.run_id or "",
    }.items():
        client.set_model_version_tag(name, version.version, key, value)
    return version
