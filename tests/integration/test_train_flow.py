"""`train_flow` under a real Prefect API and a real MLflow store: lake -> features -> Feast ->
point-in-time dataset -> candidates as separate tasks and runs -> registered versions."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import mlflow
import pytest

from cta.components import make_lake
from cta.exchange_server import LocalExchangeServer
from cta.registry import registered_model_name
from flows.features import features_flow
from flows.ingest import ingest_flow
from flows.train import train_flow

pytestmark = pytest.mark.integration


def test_train_flow_trains_each_candidate_in_its_own_run_and_survives_a_failure(
    prefect_harness: None, exchange_server: LocalExchangeServer, settings_for: Any, tmp_path: Path
) -> None:
    settings = settings_for(
        exchange={"api_url": exchange_server.url, "market_time": "replay"},
        ingest={"start": "2022-03-01"},
        markets={"symbols": ["BTC/USDT"]},
        features={"table_dir": str(tmp_path / "features"), "feast_dir": str(tmp_path / "feast")},
        training={
            "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
            "artifact_root": str(tmp_path / "mlruns"),
            "folds": 3,
        },
    )
    asyncio.run(ingest_flow(settings))
    features_flow(settings)
    rows = train_flow(settings, candidates=["logistic", "no_such_family", "gbm"])
    by_family = {row["family"]: row for row in rows}
    assert "unknown family" in by_family["no_such_family"]["error"]
    assert by_family["logistic"]["version"] == "1" and by_family["gbm"]["version"] == "2"
    mlflow.set_tracking_uri(settings.training.tracking_uri)
    name = registered_model_name(make_lake(settings).markets()[0])
    versions = mlflow.MlflowClient().search_model_versions(f"name='{name}'")
    assert sorted(v.tags["family"] for v in versions) == ["gbm", "logistic"]
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    assert sorted(r.data.tags["family"] for r in runs) == ["gbm", "logistic"]
    assert all(r.info.status == "FINISHED" and r.data.tags["data_hash"] for r in runs)
