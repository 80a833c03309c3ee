"""The model manager on a real MLflow registry: it follows the champion alias, smoke-tests before a
swap, and keeps the last good model when a new champion's artifact is corrupt or its output is not a
position. With no champion it serves nothing and says why."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient
from mlflow.models import infer_signature

from serving.models_manager import ModelManager

NAME = "cta.binance.BTC_USDT.1h"
MARKET = "binance:BTC/USDT:1h"
ROWS = pd.DataFrame({"ret_1": [0.01, -0.02, 0.0, 0.03], "vol_24": [0.1, 0.2, 0.1, 0.3]})


class ConstantPosition(mlflow.pyfunc.PythonModel):  # type: ignore[misc]
    def __init__(self, position: float) -> None:
        self.position = position

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> Any:
        return pd.Series([self.position] * len(model_input), dtype="float64").to_numpy()


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> MlflowClient:
    """One registry for the module (logging models is slow); the tests run in file order."""
    tmp_path = tmp_path_factory.mktemp("registry")
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = mlflow.create_experiment("models", artifact_location=(tmp_path / "artifacts").as_uri())
    for position in (1.0, 0.0, 5.0):  # v1 good, v2 good (artifact corrupted below), v3 not a position
        model = ConstantPosition(position)
        with mlflow.start_run(experiment_id=experiment):
            mlflow.pyfunc.log_model(
                name="model",
                python_model=model,
                signature=infer_signature(ROWS, model.predict(None, ROWS)),
                registered_model_name=NAME,
            )
    return MlflowClient()


def manager(client: MlflowClient) -> ModelManager:
    return ModelManager(client, {MARKET: NAME}, lambda market: ROWS, poll_s=0.0)


def test_no_champion_serves_nothing_and_says_why(registry: MlflowClient) -> None:
    models = manager(registry)
    asyncio.run(models.refresh(MARKET))
    assert models.model(MARKET) is None
    assert "no champion" in (models.problem(MARKET) or "")


def test_alias_moves_are_followed_and_bad_champions_keep_the_last_good_model(registry: MlflowClient) -> None:
    models = manager(registry)
    registry.set_registered_model_alias(NAME, "champion", "1")
    asyncio.run(models.refresh(MARKET))
    first = models.model(MARKET)
    assert first is not None and first.version == "1" and models.problem(MARKET) is None
    assert list(first.predict(ROWS)) == [1.0] * 4

    model_id = registry.get_model_version(NAME, "2").source.removeprefix("models:/")
    stored = Path(mlflow.get_logged_model(model_id).artifact_location.removeprefix("file://"))
    (stored / "MLmodel").write_text("corrupt: [")  # a damaged artifact (bad sync, partial write)
    registry.set_registered_model_alias(NAME, "champion", "2")
    asyncio.run(models.refresh(MARKET))
    kept = models.model(MARKET)
    assert kept is not None and kept.version == "1"
    assert "champion v2 failed to load" in (models.problem(MARKET) or "") and "keeping v1" in (
        models.problem(MARKET) or ""
    )

    registry.set_registered_model_alias(NAME, "champion", "3")  # loads, but 5.0 is not a position
    asyncio.run(models.refresh(MARKET))
    assert models.model(MARKET).version == "1"  # type: ignore[union-attr]
    assert "not a position" in (models.problem(MARKET) or "")

    registry.set_registered_model_alias(NAME, "champion", "1")  # back to a good one: no problem left
    asyncio.run(models.refresh(MARKET))
    assert models.model(MARKET).version == "1" and models.problem(MARKET) is None  # type: ignore[union-attr]
