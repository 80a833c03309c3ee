"""`cta models ...`, `cta kill-switch` and `cta ledger verify` as a user runs them (subprocesses on a
real MLflow registry and a real serving database)."""

from __future__ import annotations

import json
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from mlflow.models import infer_signature

from tests.integration.test_cli import error_lines, run_cta

pytestmark = pytest.mark.integration

NAME = "cta.binance.BTC_USDT.1h"
ONE_MARKET = ["-s", "BTC/USDT", "-t", "1h"]


def cta(tmp_path: Path, *args: str, extra_env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return run_cta(*args, tmp_path=tmp_path, extra_env=extra_env)


def env_for(tmp_path: Path) -> dict[str, str]:
    return {
        "CTA_TRAINING__TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "CTA_SERVING__DATABASE_URL": f"sqlite:///{tmp_path / 'serving.db'}",
    }


class Flat(mlflow.pyfunc.PythonModel):  # type: ignore[misc]
    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> Any:
        return np.zeros(len(model_input))


def save_loadable_model(path: Path) -> None:
    """A model the worker can load (promote and rollback load a version before moving the alias to it)."""
    import sys

    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # loadable where `tests` is not importable
    rows = pd.DataFrame({"ret_1": [0.01, -0.02]})
    mlflow.pyfunc.save_model(path, python_model=Flat(), signature=infer_signature(rows, np.zeros(2)))


def test_models_promote_list_show_and_rollback(tmp_path: Path) -> None:
    env = env_for(tmp_path)
    client = MlflowClient(env["CTA_TRAINING__TRACKING_URI"])
    save_loadable_model(tmp_path / "model")
    client.create_registered_model(NAME)
    for _ in range(2):
        client.create_model_version(NAME, source=str(tmp_path / "model"), tags={"family": "gbm"})

    for version in ("1", "2"):
        result = cta(tmp_path, "models", "promote", version, "--reason", "operator test", *ONE_MARKET, extra_env=env)
        assert result.returncode == 0, result.stderr
    assert "v2 is the champion (previous: v1)" in result.stdout

    listing = cta(tmp_path, "models", "list", *ONE_MARKET, extra_env=env)
    assert listing.returncode == 0 and "champion" in listing.stdout and "previous" in listing.stdout

    assert cta(tmp_path, "models", "rollback", *ONE_MARKET, extra_env=env).returncode == 0
    shown = cta(tmp_path, "models", "show", "champion", *ONE_MARKET, extra_env=env)
    assert json.loads(shown.stdout)["version"] == "1"
    assert MlflowClient(env["CTA_TRAINING__TRACKING_URI"]).get_model_version(NAME, "2").tags["verdict"] == "rolled_back"

    again = cta(tmp_path, "models", "rollback", *ONE_MARKET, extra_env=env)
    assert again.returncode == 1 and "no previous champion" in error_lines(again)[0]
    unknown = cta(tmp_path, "models", "promote", "9", "--reason", "x", *ONE_MARKET, extra_env=env)
    assert unknown.returncode == 1 and error_lines(unknown) == [f"error: {NAME} has no version '9'"]
    both = cta(tmp_path, "models", "show", extra_env=env)
    assert both.returncode == 1 and "choose one market" in error_lines(both)[0]
    mlflow.set_tracking_uri("")  # leave no global state behind


def test_kill_switch_and_ledger_verify_detects_tampering(tmp_path: Path) -> None:
    env = env_for(tmp_path)
    for state in ("halt", "reduce", "resume"):
        result = cta(tmp_path, "kill-switch", state, "--reason", f"drill {state}", extra_env=env)
        assert result.returncode == 0, result.stderr
    assert "RUNNING" in result.stdout
    ok = cta(tmp_path, "ledger", "verify", extra_env=env)
    assert ok.returncode == 0 and "ledger ok: 3 entries" in ok.stdout

    with sqlite3.connect(tmp_path / "serving.db") as db:
        db.execute("UPDATE ledger_entries SET payload = replace(payload, 'drill reduce', 'nothing') WHERE seq = 2")
    broken = cta(tmp_path, "ledger", "verify", extra_env=env)
    assert broken.returncode == 1 and error_lines(broken)[0].startswith("error: ledger broken at entry 2")
    assert cta(tmp_path, "kill-switch", "pause", "--reason", "x", extra_env=env).returncode == 1
