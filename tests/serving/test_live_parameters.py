"""Trading parameters changed while the worker runs (`serving.parameters`): the worker trades with them from its
next decision, without a restart, and a restarted worker reads them back; a disabled market is decided but sends
no order. The real worker (Feast, the registry's champion, decide, risk, the paper broker) on real candles."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient
from sqlalchemy import func, select

from cta.registry import configure_mlflow, promote, registered_model_name, registry_lock
from serving import parameters
from serving.models import Order
from serving.replay import replay_worker
from serving.worker import Worker
from tests.conftest import load_test_settings
from tests.factories import real_candles
from tests.serving.test_replay_parity import BAR_MS, MARKET, log_hysteresis

pytestmark = pytest.mark.integration


@pytest.fixture
def settings(tmp_path: Path) -> Any:
    return hysteresis_settings(tmp_path)


def hysteresis_settings(tmp_path: Path) -> Any:
    """Settings on `tmp_path` (SQLite, Feast, a registry) whose BTC/USDT 1h champion is the hysteresis model."""
    settings = load_test_settings(
        paths={"data_dir": str(tmp_path / "data"), "logs_dir": str(tmp_path / "logs")},
        training={"tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "artifact_root": str(tmp_path / "mlruns")},
        features={"feast_dir": str(tmp_path / "feast"), "table_dir": str(tmp_path / "features")},
        serving={
            "database_url": f"sqlite:///{tmp_path / 'serving.db'}",
            "risk": {"daily_loss_limit": 1.0, "max_drawdown_halt": 1.0},
        },
    )
    configure_mlflow(settings)
    name = registered_model_name(MARKET)
    version = log_hysteresis(name)
    promote(
        MlflowClient(),
        name,
        version,
        expected_champion=None,
        reason="test",
        lock=registry_lock(settings.training.tracking_uri, tmp_path / "locks", name),
    )
    return settings


async def run_bars(worker: Worker, rows: Any) -> None:
    state = worker.states[str(MARKET)]
    for row in rows.itertuples():
        worker.refresh_parameters()  # what the run loop does between candles
        candle = [int(row.ts), row.open, row.high, row.low, row.close, row.volume]
        worker.clock["now"] = int(row.ts) + BAR_MS  # type: ignore[attr-defined]
        await worker.on_candle(state, candle, int(row.ts) + BAR_MS)


def test_a_change_applies_from_the_next_decision_survives_a_restart_and_a_disabled_market_sends_nothing(
    settings: Any,
) -> None:
    candles = real_candles("BTCUSDT", "1h", 900)
    start = int(candles["ts"].iloc[600])
    clock = {"now": start}
    worker = replay_worker(settings, MARKET, candles, clock)
    worker.clock = clock  # type: ignore[attr-defined]

    async def scenario() -> None:
        await worker.start()
        await worker.models.refresh(str(MARKET))
        rows = candles[candles["ts"] >= start]
        await run_bars(worker, rows.iloc[:100])
        assert max(d.target for d in worker.decisions) == 1.0  # the hysteresis champion goes all in
        parameters.change(worker.sessions, settings, {"limits.max_position": 0.25}, reason="smaller", by="test")
        await run_bars(worker, rows.iloc[100:200])
        after = list(worker.decisions)[-100:]
        assert max(d.target for d in after) == 0.25 and min(d.target for d in after) >= 0.0

        parameters.change(
            worker.sessions,
            settings,
            {},
            reason="maintenance",
            by="test",
            disable={str(MARKET): True},
            known_markets=(str(MARKET),),
        )
        with worker.sessions() as session:
            orders_before = session.scalar(select(func.count(Order.id)))
        await run_bars(worker, rows.iloc[200:300])
        with worker.sessions() as session:
            assert session.scalar(select(func.count(Order.id))) == orders_before
        disabled = list(worker.decisions)[-100:]
        assert len(disabled) == 100 and any("disabled" in d.reason for d in disabled)

    asyncio.run(scenario())

    restarted = replay_worker(settings, MARKET, candles, clock)  # a new process on the same database
    asyncio.run(restarted.start())
    assert restarted.settings.limits.max_position == 0.25
    assert restarted.disabled == frozenset({str(MARKET)})
    assert restarted.configured.limits.max_position == 1.0  # the configuration itself is untouched
