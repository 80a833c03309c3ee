"""Replay parity: the out-of-sample candles fed bar by bar through the serving worker (features pushed
to and read back from Feast, the champion loaded from the MLflow registry, decide(), risk checks, the
paper broker) produce exactly the backtest's decisions and fills. For a trained stateless model (logistic)
and for a stateful one (hysteresis bands: its position depends on its previous one, which the worker streams
back to it; without that, the worker's short context starts it flat and the decisions differ)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from mlflow.models import infer_signature
from sqlalchemy import select

from backtests.engine import run_fast
from backtests.evaluate import model_positions, out_of_sample_window
from cta.execution import Execution
from cta.lake import Market
from cta.registry import configure_mlflow, promote, registered_model_name, registry_lock
from features.compute import compute_features
from features.dataset import assemble
from features.registry import registry_version
from serving.models import Fill, Order
from serving.paper import PaperBroker
from serving.replay import replay_worker
from serving.worker import Worker
from tests.conftest import load_test_settings
from tests.factories import real_candles, training_data
from training.splits import train_validation_oos
from training.train import train_candidate

pytestmark = pytest.mark.integration

MARKET = Market("binance", "BTC/USDT", "1h")
BAR_MS = 3_600_000


class Hysteresis(mlflow.pyfunc.PythonModel):  # type: ignore[misc]
    """Long from RSI > 60 until RSI < 40, else flat: a stateful model (like PPO, which conditions on the
    position it holds). `previous_position` continues the walk for the last row (the serving contract)."""

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> Any:
        rsi = model_input["rsi_14"].to_numpy()
        previous = (params or {}).get("previous_position")
        held, first = (0.0, 0) if previous is None else (float(previous), len(rsi) - 1)
        out = np.zeros(len(rsi))
        for t in range(first, len(rsi)):
            held = 1.0 if rsi[t] > 60 else 0.0 if rsi[t] < 40 else held
            out[t] = held
        return out


def log_hysteresis(name: str) -> str:
    example = compute_features(real_candles("BTCUSDT", "1h", 200)).drop(columns="ts").head(5)
    with mlflow.start_run():
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=Hysteresis(),
            signature=infer_signature(example, Hysteresis().predict(None, example)),
            registered_model_name=name,
            metadata={"history_rows": 1, "stateful": True},
        )
    return str(info.registered_model_version)


@pytest.fixture(params=["logistic", "keras", "ppo", "hysteresis"])
def champion_settings(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    settings = load_test_settings(
        paths={"data_dir": str(tmp_path / "data"), "logs_dir": str(tmp_path / "logs")},
        training={
            "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
            "artifact_root": str(tmp_path / "mlruns"),
        },
        features={"feast_dir": str(tmp_path / "feast"), "table_dir": str(tmp_path / "features")},
        serving={
            "database_url": f"sqlite:///{tmp_path / 'serving.db'}",
            "risk": {"daily_loss_limit": 1.0, "max_drawdown_halt": 1.0},  # limits the backtest does not model
        },
    )
    configure_mlflow(settings)
    name = registered_model_name(MARKET)
    if request.param == "hysteresis":
        version = log_hysteresis(name)
    else:
        version = train_candidate(request.param, training_data(rows=3000), settings, registry_version()).version
    lock = registry_lock(settings.training.tracking_uri, tmp_path / "locks", name)
    promote(MlflowClient(), name, version, expected_champion=None, reason="test", lock=lock)
    return settings


def test_worker_replay_reproduces_the_backtest(champion_settings: Any, tmp_path: Path) -> None:
    settings = champion_settings
    candles = real_candles("BTCUSDT", "1h", 3000)
    dataset = assemble(MARKET, candles, compute_features(candles), horizon=4, dead_zone_bps=10.0)
    split = train_validation_oos(len(dataset), 0.15, 0.2, 4)
    window = out_of_sample_window(dataset, split.out_of_sample, candles)
    model = mlflow.pyfunc.load_model(f"models:/{registered_model_name(MARKET)}@champion")
    execution = Execution.from_settings(settings.costs, settings.backtest)
    backtest = run_fast(window.bars, model_positions(model, window), settings.limits, execution)
    assert len(backtest.fills) >= 5  # the model trades in this window

    worker, broker, sessions = build_worker(settings, candles, start=int(window.bars.ts[0]))
    rows = candles[candles["ts"] >= window.bars.ts[0]].head(len(window.bars))
    asyncio.run(replay(worker, rows))

    targets = np.array([d.target for d in worker.decisions])
    np.testing.assert_array_equal(targets, backtest.targets)
    with sessions() as session:
        fills = session.execute(select(Fill.ts, Fill.price, Fill.amount, Order.side).join(Order)).all()
    bar_of = {int(ts): i for i, ts in enumerate(window.bars.ts)}
    np.testing.assert_array_equal([bar_of[f.ts] for f in fills], backtest.fills.bar)
    np.testing.assert_allclose([f.price for f in fills], backtest.fills.price, rtol=1e-12)
    signed = [f.amount if f.side == "buy" else -f.amount for f in fills]
    np.testing.assert_allclose(signed, backtest.fills.units, rtol=1e-9)
    _, cash = broker.account(MARKET)
    units = backtest.units[-1]
    assert cash + units * window.bars.close[-1] == pytest.approx(backtest.metrics["final_equity"], rel=1e-9)


def build_worker(settings: Any, candles: pd.DataFrame, start: int) -> tuple[Worker, PaperBroker, Any]:
    clock = {"now": start}  # the window's first bar has not closed yet
    worker = replay_worker(settings, MARKET, candles, clock)
    worker.clock = clock  # type: ignore[attr-defined]
    assert isinstance(worker.broker, PaperBroker)
    return worker, worker.broker, worker.sessions


async def replay(worker: Worker, rows: pd.DataFrame) -> None:
    await worker.start()
    await worker.models.refresh(str(MARKET))
    assert worker.models.model(str(MARKET)) is not None, worker.models.problem(str(MARKET))
    state = worker.states[str(MARKET)]
    for row in rows.itertuples():
        candle = [int(row.ts), row.open, row.high, row.low, row.close, row.volume]
        worker.clock["now"] = int(row.ts) + BAR_MS  # type: ignore[attr-defined]
        await worker.on_candle(state, candle, int(row.ts) + BAR_MS)
