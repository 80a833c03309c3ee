"""The production profile's MLflow: a tracking server (`mlflow server`) on PostgreSQL, serving artifacts it
keeps in S3 (moto), and clients that know only its URL.

The learning loop (features -> train -> backtest -> gate -> promote) runs against the server from a process with
no S3 endpoint and no AWS credentials, then the test checks, through the server's REST API, the registered
version, its `champion` alias, the experiment's `mlflow-artifacts:` location and the artifacts listed through the
server; through boto3, that the objects really are in the bucket; that the serving model manager loads the
champion with nothing but the tracking URL; and, from a recording relay that is the clients' only way to the
server, that every artifact was uploaded and downloaded through the server (no presigned URL to the bucket).
"""

from __future__ import annotations

import asyncio
import json
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from mlflow import MlflowClient

from cta.components import make_lake
from cta.config import load_settings
from cta.lake import Market
from cta.registry import CHAMPION, experiment_name, registered_model_name
from features.compute import compute_features
from features.registry import feature_names
from flows.learn import learn_flow
from serving.models_manager import ModelManager
from tests.conftest import CONFIG_DIR
from tests.factories import LAX_GATE, real_candles
from tests.production.conftest import HttpFaultProxy, MlflowStack

pytestmark = [pytest.mark.integration, pytest.mark.production]

BTC = Market("binance", "BTC/USDT", "1h")
CANDLE_ROWS = 2_200  # ~3 months of hours: enough for 2 folds, validation and the reserved out-of-sample window


def rest(server: str, endpoint: str, **query: str) -> dict[str, Any]:
    """GET a REST endpoint of the tracking server (what any HTTP client sees)."""
    url = f"{server}{endpoint}?{urllib.parse.urlencode(query)}"
    with urllib.request.urlopen(url, timeout=30) as response:
        data: dict[str, Any] = json.loads(response.read())
        return data


def listed(server: str, path: str) -> list[str]:
    """Every file under `path` (relative to the server's artifact root), listed through the server."""
    files: list[str] = []
    for item in rest(server, "/api/2.0/mlflow-artifacts/artifacts", path=path).get("files", []):
        child = f"{path}/{item['path']}"
        files += listed(server, child) if item.get("is_dir") else [child]
    return files


@pytest.fixture
def front(mlflow_stack: MlflowStack) -> Iterator[HttpFaultProxy]:
    """A relay in front of the tracking server that records every request: the clients' only way in."""
    relay = HttpFaultProxy(mlflow_stack.server.url)
    relay.up()
    try:
        yield relay
    finally:
        relay.close()


@pytest.mark.slow
def test_learning_loop_and_serving_need_only_the_tracking_url(
    mlflow_stack: MlflowStack,
    front: HttpFaultProxy,
    prefect_harness: None,
    no_storage_credentials: None,
    tmp_path: Path,
) -> None:
    server = front.url  # the tracking URL the clients get (the server behind the recording relay)
    local_artifacts = tmp_path / "local-artifacts"  # training.artifact_root: must stay unused with a server
    settings = load_settings(
        "production",
        env={},
        config_dir=CONFIG_DIR,
        overrides={
            "paths": {"data_dir": str(tmp_path / "data"), "logs_dir": str(tmp_path / "logs")},
            "markets": {"symbols": ["BTC/USDT"], "timeframes": ["1h"]},
            "lake": {"uri": str(tmp_path / "lake")},
            "validation": {"quarantine_uri": str(tmp_path / "quarantine"), "results_dir": str(tmp_path / "gx")},
            "features": {
                "online_store": "sqlite",
                "table_dir": str(tmp_path / "features"),
                "feast_dir": str(tmp_path / "feast"),
            },
            "training": {"tracking_uri": server, "artifact_root": str(local_artifacts), "folds": 2},
            "backtest": {"gate": LAX_GATE},
        },
    )
    assert load_settings("production", env={}, config_dir=CONFIG_DIR).training.tracking_uri == "http://127.0.0.1:5000"
    make_lake(settings).upsert(BTC, real_candles("BTCUSDT", rows=CANDLE_ROWS))

    verdicts = learn_flow(settings, str(BTC), candidates=["logistic"])

    assert [(row["family"], row["verdict"]) for row in verdicts] == [("logistic", CHAMPION)], verdicts
    name = registered_model_name(BTC)
    # the registry, through the server's REST API
    alias = rest(server, "/api/2.0/mlflow/registered-models/alias", name=name, alias=CHAMPION)["model_version"]
    assert alias["version"] == "1" and CHAMPION in alias["aliases"]
    experiment = rest(server, "/api/2.0/mlflow/experiments/get-by-name", experiment_name=experiment_name(BTC))
    location = experiment["experiment"]["artifact_location"]
    assert location.startswith("mlflow-artifacts:/"), location
    assert not local_artifacts.exists()
    # the model's and the backtest's artifacts, listed through the server (mlflow-artifacts)
    model_id = alias["source"].removeprefix("models:/")
    model_uri = rest(server, f"/api/2.0/mlflow/logged-models/{model_id}")["model"]["info"]["artifact_uri"]
    assert model_uri.startswith("mlflow-artifacts:/"), model_uri
    model_path = urllib.parse.urlparse(model_uri).path.lstrip("/")
    model_files = listed(server, model_path)
    assert f"{model_path}/MLmodel" in model_files and any(f.endswith("python_model.pkl") for f in model_files)
    backtest_run = MlflowClient(server).get_model_version(name, "1").tags["backtest_run_id"]
    run_uri = rest(server, "/api/2.0/mlflow/runs/get", run_id=backtest_run)["run"]["info"]["artifact_uri"]
    run_path = urllib.parse.urlparse(run_uri).path.lstrip("/")
    assert {f"{run_path}/backtest/report.md", f"{run_path}/backtest/equity.png", f"{run_path}/verdict.json"} <= set(
        listed(server, run_path)
    )
    # ... and really in the bucket, under the server's artifacts destination
    keys = set(mlflow_stack.objects())
    assert f"{mlflow_stack.prefix}/{model_path}/MLmodel" in keys
    assert f"{mlflow_stack.prefix}/{run_path}/backtest/report.md" in keys

    # the serving model manager loads the champion with the tracking URL only (no storage credentials here)
    rows = compute_features(real_candles("BTCUSDT", rows=CANDLE_ROWS))[feature_names()].tail(64)
    manager = ModelManager(
        MlflowClient(server), {str(BTC): name}, smoke_rows=lambda market: pd.DataFrame(rows), poll_s=60
    )
    asyncio.run(manager.refresh(str(BTC)))
    loaded = manager.model(str(BTC))
    assert manager.problem(str(BTC)) is None and loaded is not None and loaded.version == "1"
    assert -1.0 <= loaded.predict_next(rows) <= 1.0

    # every artifact byte went through the server: files uploaded and downloaded over its API, and never a
    # presigned URL asked for (MLflow's "multipart download" would fetch straight from the bucket)
    artifact_calls = [(method, path) for method, path, status in front.requests if "/mlflow-artifacts/" in path]
    assert not [path for _, path in artifact_calls if "/presigned/" in path or "/mpu/" in path], artifact_calls
    assert ("PUT", f"/api/2.0/mlflow-artifacts/artifacts/{model_path}/MLmodel") in artifact_calls
    assert ("GET", f"/api/2.0/mlflow-artifacts/artifacts/{model_path}/MLmodel") in artifact_calls
