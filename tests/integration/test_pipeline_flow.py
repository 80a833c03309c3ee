"""`pipeline_flow` end to end under a real Prefect API and MLflow store: local exchange -> ingest ->
GX gate -> features -> Feast -> train -> backtest -> gate -> promote. The alias moves only on a pass."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import mlflow
import pytest

from cta.exchange_server import LocalExchangeServer
from flows.pipeline import pipeline_flow
from tests.factories import LAX_GATE

pytestmark = [pytest.mark.integration, pytest.mark.slow]

NAME = "cta.binance.BTC_USDT.1h"
IMPOSSIBLE = {"min_sharpe": 100.0}


def pipeline_settings(settings_for: Any, exchange: LocalExchangeServer, tmp_path: Path, gate: dict[str, Any]) -> Any:
    return settings_for(
        exchange={"api_url": exchange.url, "market_time": "replay"},
        ingest={"start": "2022-03-01"},
        markets={"symbols": ["BTC/USDT"]},
        features={"table_dir": str(tmp_path / "features"), "feast_dir": str(tmp_path / "feast")},
        training={
            "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
            "artifact_root": str(tmp_path / "mlruns"),
            "folds": 2,
            "candidates": ["logistic", "gbm"],
        },
        backtest={"gate": gate},
    )


def aliases(client: mlflow.MlflowClient) -> dict[str, str]:
    return {alias: str(v) for alias, v in client.get_registered_model(NAME).aliases.items()}


def test_pipeline_gates_promotes_and_never_moves_the_alias_on_failure(
    prefect_harness: None, exchange_server: LocalExchangeServer, settings_for: Any, tmp_path: Path
) -> None:
    settings = pipeline_settings(settings_for, exchange_server, tmp_path, IMPOSSIBLE)
    rejected = asyncio.run(pipeline_flow(settings))["verdicts"]
    assert [row["verdict"] for row in rejected] == ["rejected", "rejected"]
    assert all("Sharpe" in row["reasons"] and "minimum 100.00" in row["reasons"] for row in rejected)
    mlflow.set_tracking_uri(settings.training.tracking_uri)
    client = mlflow.MlflowClient()
    assert aliases(client) == {}
    assert {client.get_model_version(NAME, v).tags["verdict"] for v in ("1", "2")} == {"rejected"}

    settings = pipeline_settings(settings_for, exchange_server, tmp_path, LAX_GATE)
    verdicts = asyncio.run(pipeline_flow(settings))["verdicts"]
    outcomes = {row["version"]: row["verdict"] for row in verdicts}
    best = max(verdicts, key=lambda row: row["sharpe"])
    assert outcomes == {best["version"]: "champion", **{row["version"]: "passed" for row in verdicts if row != best}}
    assert aliases(client) == {"champion": best["version"]}

    backtest_run = mlflow.get_run(client.get_model_version(NAME, best["version"]).tags["backtest_run_id"])
    assert backtest_run.data.tags["kind"] == "backtest" and backtest_run.data.tags["verdict"] == "passed"
    assert {"sharpe", "max_drawdown", "buy_and_hold_sharpe", "deflated_sharpe"} <= set(backtest_run.data.metrics)
    artifacts = {a.path for a in client.list_artifacts(backtest_run.info.run_id, "backtest")}
    assert artifacts == {"backtest/equity.png", "backtest/report.md", "backtest/fills.csv"}
    verdict = json.loads(
        Path(
            mlflow.artifacts.download_artifacts(run_id=backtest_run.info.run_id, artifact_path="verdict.json")
        ).read_text()
    )
    assert verdict["verdict"] == "passed" and verdict["champion_version"] is None

    # Same data, same seed: the new candidates equal the champion, so the margin is not beaten
    # unless strictly better; the champion is backtested on the same window and compared.
    settings = pipeline_settings(settings_for, exchange_server, tmp_path, {**LAX_GATE, "champion_margin": 0.01})
    third = asyncio.run(pipeline_flow(settings))["verdicts"]
    assert all(row["verdict"] in {"rejected", "passed"} for row in third)
    assert all(f"champion v{best['version']}" in row["reasons"] for row in third if row["verdict"] == "rejected")
    assert aliases(client) == {"champion": best["version"]}
