"""Backtest -> gate -> promote, one market at a time, as three Prefect subflows: the candidates of a
training run and the current champion are backtested on the reserved out-of-sample window, gated,
recorded in MLflow (a backtest run per model) and the best passing candidate becomes the champion."""

from __future__ import annotations

from typing import Any

from mlflow import MlflowClient
from prefect import flow, get_run_logger

from backtests.evaluate import MarketEvaluation, backtest_market, gate_market, out_of_sample_window, record_and_promote
from backtests.gate import Verdict
from cta.components import make_lake
from cta.config import Settings
from cta.lake import Market
from cta.registry import configure_mlflow
from features.feast_store import feature_store_for
from training.train import market_dataset, prepare


@flow(name="backtest", flow_run_name="backtest {market_id}")
def backtest_flow(settings: Settings, market_id: str, versions: list[str]) -> MarketEvaluation:
    """Rebuild the market's dataset, take its reserved out-of-sample block, backtest each version,
    buy-and-hold and the current champion on it."""
    configure_mlflow(settings)
    market = Market.parse(market_id)
    lake = make_lake(settings)
    dataset = market_dataset(settings, feature_store_for(settings.features), lake, market)
    _, out_of_sample = prepare(dataset, settings)
    window = out_of_sample_window(dataset, out_of_sample, lake.read(market))
    evaluation = backtest_market(settings, MlflowClient(), window, versions)
    get_run_logger().info(
        "%s: %d out-of-sample bars; buy-and-hold Sharpe %.2f; champion %s",
        market,
        len(window.bars),
        evaluation.benchmark.metrics["sharpe"],
        f"v{evaluation.champion_version}" if evaluation.champion_version else "none",
    )
    return evaluation


@flow(name="gate", flow_run_name="gate {evaluation.model_name}")
def gate_flow(settings: Settings, evaluation: MarketEvaluation) -> dict[str, Verdict]:
    verdicts = gate_market(settings, evaluation)
    logger = get_run_logger()
    for version, verdict in verdicts.items():
        logger.info("%s v%s: %s (%s)", evaluation.model_name, version, verdict.label, verdict.summary())
    return verdicts


@flow(name="promote", flow_run_name="promote {evaluation.model_name}")
def promote_flow(settings: Settings, evaluation: MarketEvaluation) -> list[dict[str, Any]]:
    configure_mlflow(settings)
    return record_and_promote(settings, MlflowClient(), evaluation)


def evaluate_market_flows(settings: Settings, market_id: str, versions: list[str]) -> list[dict[str, Any]]:
    """backtest -> gate -> promote for one market's candidate versions."""
    evaluation = backtest_flow(settings, market_id, versions)
    gate_flow(settings, evaluation)
    return promote_flow(settings, evaluation)


def evaluate_training(settings: Settings, training: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """backtest -> gate -> promote for every market of a training run's rows, then one `failed` verdict row per
    candidate that failed to train (it never reaches the gate). Returns the verdict rows."""
    versions: dict[str, list[str]] = {}
    for row in training:
        if "version" in row:
            versions.setdefault(row["market"], []).append(str(row["version"]))
    verdicts: list[dict[str, Any]] = []
    for market_id, market_versions in versions.items():
        verdicts += evaluate_market_flows(settings, market_id, market_versions)
    verdicts += [
        {"market": row["market"], "family": row["family"], "version": "-", "verdict": "failed", "reasons": row["error"]}
        for row in training
        if "error" in row
    ]
    return verdicts
