"""The scheduled learning loop: `learn_flow` for one market under a real (temporary) Prefect API and MLflow
store (features -> train -> backtest -> gate -> promote, each a subflow run), and its deployments: one per
market, on the configured cron, at most one run of a market at a time."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import mlflow
import pytest

from app.report import build_report
from cta.config import Settings
from cta.errors import ConfigError
from cta.exchange_server import LocalExchangeServer
from cta.lake import Market
from cta.registry import load_expectations
from flows.deployments import all_deployments, learn_deployments
from flows.ingest import ingest_flow
from flows.learn import learn_flow
from tests.conftest import load_test_settings
from tests.factories import LAX_GATE

pytestmark = pytest.mark.integration


async def completed_flow_runs() -> dict[str, int]:
    """Completed flow runs so far, by flow name."""
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        runs = await client.read_flow_runs()
        names = {flow_id: (await client.read_flow(flow_id)).name for flow_id in {r.flow_id for r in runs}}
    counts: dict[str, int] = {}
    for run in runs:
        if run.state_name == "Completed":
            counts[names[run.flow_id]] = counts.get(names[run.flow_id], 0) + 1
    return counts


@pytest.mark.slow
def test_learn_flow_trains_gates_and_promotes_one_market(
    prefect_harness: None, exchange_server: LocalExchangeServer, settings_for: Any, tmp_path: Path
) -> None:
    settings = settings_for(
        exchange={"api_url": exchange_server.url, "market_time": "replay"},
        ingest={"start": "2022-03-01"},
        features={"table_dir": str(tmp_path / "features"), "feast_dir": str(tmp_path / "feast")},
        training={
            "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
            "artifact_root": str(tmp_path / "mlruns"),
            "folds": 2,
            "candidates": ["logistic"],
        },
        backtest={"gate": LAX_GATE},
    )
    asyncio.run(ingest_flow(settings))  # both configured markets are in the lake; the loop learns one of them
    before = asyncio.run(completed_flow_runs())

    verdicts = learn_flow(settings, "binance:BTC/USDT:1h")

    assert [(row["market"], row["family"], row["verdict"]) for row in verdicts] == [
        ("binance:BTC/USDT:1h", "logistic", "champion")
    ]
    after = asyncio.run(completed_flow_runs())
    for name in ("learn", "features", "train", "backtest", "gate", "promote"):
        assert after.get(name, 0) == before.get(name, 0) + 1, (name, after)
    mlflow.set_tracking_uri(settings.training.tracking_uri)
    client = mlflow.MlflowClient()
    assert str(client.get_model_version_by_alias("cta.binance.BTC_USDT.1h", "champion").version) == "1"
    assert client.search_model_versions("name = 'cta.binance.ETH_USDT.1h'") == []  # only its own market learned
    # what champion monitoring will hold the champion to: its gating backtest, bar by bar, and the training rows
    expected = load_expectations(client, "cta.binance.BTC_USDT.1h", "1")
    assert expected is not None and expected.version == "1" and len(expected.bar_returns) > 100
    assert "rsi_14" in expected.feature_edges and abs(sum(expected.feature_fractions["rsi_14"]) - 1) < 1e-9
    # the honest report: the gate's candidates beside buy-and-hold and flat, the trial count, the verdict
    report = build_report(settings, [Market.parse("binance:BTC/USDT:1h")], tmp_path / "report").read_text()
    assert "1 candidate(s) tried" in report and "| buy-and-hold |" in report and "| flat (no position) |" in report
    assert "| logistic | v1 |" in report and "| champion |" in report
    assert "### Champion v1: live against its backtest" in report and "it has not traded here" in report
    assert (tmp_path / "report" / "candidates-binance_BTC_USDT_1h.png").stat().st_size > 1000


def test_one_learn_deployment_per_market_on_the_cron_one_run_at_a_time() -> None:
    settings = load_test_settings(
        markets={"symbols": ["BTC/USDT", "ETH/USDT"], "timeframes": ["1h", "4h"]}, prefect={"learn_cron": "30 2 * * 1"}
    )
    deployments = learn_deployments(settings)
    assert [d.name for d in deployments] == [
        "learn-binance-BTC_USDT-1h",
        "learn-binance-BTC_USDT-4h",
        "learn-binance-ETH_USDT-1h",
        "learn-binance-ETH_USDT-4h",
    ]
    for deployment in deployments:
        schedule = deployment.schedules[0].schedule
        assert (schedule.cron, schedule.timezone) == ("30 2 * * 1", "UTC")
        assert deployment.concurrency_limit == 1
        # the flow run gets the served settings back (same hash), and its market
        assert Settings.model_validate(deployment.parameters["settings"]).config_hash() == settings.config_hash()
    assert deployments[1].parameters["market_id"] == "binance:BTC/USDT:4h"
    assert [d.name for d in all_deployments(settings)][:2] == ["refresh-1h", "refresh-4h"]


@pytest.mark.parametrize("cron", ["daily", "0 3 * *", "0 3 * * * *", "0 3 ? * 1;"])
def test_a_bad_learn_schedule_names_the_field(cron: str) -> None:
    with pytest.raises(ConfigError, match=r"prefect\.learn_cron"):
        load_test_settings(prefect={"learn_cron": cron})
