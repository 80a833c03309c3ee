"""Champion monitoring in a real worker (issue 20, item 2): real candles through the worker (Feast, the paper broker,
the trading database), the champion and its gating backtest's expectations in a real MLflow registry.

- a champion whose live record departs from its backtest is demoted within a bounded number of bars: the alias
  goes back to the previous champion (which then trades), the version is tagged with the reasons, the ledger says
  so; with no previous champion the market goes flat through decide (a sell order), not by leaving the position;
- a champion whose live record IS its backtest is never demoted, and the record the watch reads from the database
  (realised returns from the equity snapshots, positions, features) lines up with the backtest's bar for bar."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from mlflow.models import infer_signature
from sqlalchemy import select

from app.report import build_report
from backtests.engine import Bars, run_fast
from cta.execution import Execution
from cta.lake import Market
from cta.metrics import bar_returns
from cta.monitor import Expectations, expectations
from cta.registry import EXPECTATIONS_ARTIFACT, configure_mlflow, promote, registered_model_name, registry_lock
from features.compute import compute_features
from features.registry import feature_names
from serving.champion_watch import ChampionWatch, observed_record
from serving.models import Decision, LedgerEntry, Order
from serving.replay import replay_worker
from serving.worker import Worker
from tests.conftest import load_test_settings
from tests.factories import real_candles

pytestmark = pytest.mark.integration

MARKET = Market("binance", "BTC/USDT", "1h")
KEY = str(MARKET)
BAR_MS = 3_600_000
MONITOR = {"every_bars": 6, "min_bars": 24, "window_bars": 48}


class Long(mlflow.pyfunc.PythonModel):  # type: ignore[misc]
    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> Any:
        return np.ones(len(model_input))


@pytest.fixture
def settings(tmp_path: Path) -> Any:
    settings = load_test_settings(
        paths={"data_dir": str(tmp_path / "data"), "logs_dir": str(tmp_path / "logs")},
        training={"tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "artifact_root": str(tmp_path / "mlruns")},
        features={"feast_dir": str(tmp_path / "feast"), "table_dir": str(tmp_path / "features")},
        serving={
            "database_url": f"sqlite:///{tmp_path / 'serving.db'}",
            "risk": {"daily_loss_limit": 1.0, "max_drawdown_halt": 1.0},
            "monitor": MONITOR,
        },
    )
    configure_mlflow(settings)
    return settings


def register(name: str, expected: Expectations | None) -> str:
    """A long-only model version; with `expected`, a backtest run holding them, tagged on the version."""
    example = compute_features(real_candles("BTCUSDT", "1h", 200)).drop(columns="ts").head(5)
    with mlflow.start_run():
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=Long(),
            signature=infer_signature(example, Long().predict(None, example)),
            registered_model_name=name,
            pip_requirements=["mlflow"],  # no inference of the environment's requirements (slow, not needed here)
        )
    version = str(info.registered_model_version)
    if expected is not None:
        with mlflow.start_run() as run:
            mlflow.log_text(expected.to_json(), EXPECTATIONS_ARTIFACT)
        MlflowClient().set_model_version_tag(name, version, "backtest_run_id", run.info.run_id)
    return version


def crown(settings: Any, tmp_path: Path, versions: list[str]) -> None:
    name = registered_model_name(MARKET)
    current = None
    for version in versions:
        lock = registry_lock(settings.training.tracking_uri, tmp_path / "locks", name)
        promote(MlflowClient(), name, version, expected_champion=current, reason="test", lock=lock)
        current = version


def watching_worker(settings: Any, candles: pd.DataFrame, start: int) -> Worker:
    clock = {"now": start}
    worker = replay_worker(settings, MARKET, candles, clock)
    worker.clock = clock  # type: ignore[attr-defined]
    locks = Path(settings.paths.data_dir) / "locks"
    worker.watch = ChampionWatch(
        settings.serving.monitor,
        worker.sessions,
        worker.models,
        lambda name: registry_lock(settings.training.tracking_uri, locks, name),
        columns=feature_names(),
    )
    return worker


async def replay(worker: Worker, rows: pd.DataFrame, until: Any = None) -> int:
    """Candle by candle, with the worker's between-candle monitoring after each (as `Worker.run` does). Returns
    the number of candles fed (stops early once `until(worker)` holds)."""
    await worker.start()
    await worker.models.refresh(KEY)
    assert worker.models.model(KEY) is not None, worker.models.problem(KEY)
    state = worker.states[KEY]
    fed = 0
    for row in rows.itertuples():
        candle = [int(row.ts), row.open, row.high, row.low, row.close, row.volume]
        worker.clock["now"] = int(row.ts) + BAR_MS  # type: ignore[attr-defined]
        await worker.on_candle(state, candle, int(row.ts) + BAR_MS)
        await worker.watch_champions()
        fed += 1
        if until is not None and until(worker):
            break
    return fed


def promised(version: str, mean: float, std: float, bars: int = 500) -> Expectations:
    """A backtest that promised a long position earning `mean` per bar with `std` (no feature distributions)."""
    rng = np.random.default_rng(7)
    return expectations(version, rng.normal(mean, std, bars), np.ones(bars), {})


def test_a_champion_departing_from_its_backtest_is_demoted_to_the_previous_which_then_trades(
    settings: Any, tmp_path: Path
) -> None:
    name = registered_model_name(MARKET)
    previous = register(name, None)
    candidate = register(name, promised("2", mean=0.005, std=0.002))  # +0.5 %/bar: no real market does that
    crown(settings, tmp_path, [previous, candidate])
    candles = real_candles("BTCUSDT", "1h", 800)
    start = int(candles["ts"].iloc[400])
    worker = watching_worker(settings, candles, start)
    rows = candles[candles["ts"] >= start]
    fed = asyncio.run(replay(worker, rows.head(200), until=lambda w: w.models.model(KEY).version == previous))

    # bounded: judged from min_bars on, every every_bars, and the promise is far off
    assert fed <= MONITOR["min_bars"] + 2 * MONITOR["every_bars"] + 1, fed
    client = MlflowClient()
    assert str(client.get_model_version_by_alias(name, "champion").version) == previous
    tags = client.get_model_version(name, candidate).tags
    assert tags["verdict"] == "demoted"
    assert "returns" in tags["demotion_reasons"] or "volatility" in tags["demotion_reasons"]
    with worker.sessions() as session:
        entries = session.scalars(select(LedgerEntry).where(LedgerEntry.kind == "demotion")).all()
    assert len(entries) == 1
    payload = json.loads(entries[0].payload)
    assert payload["version"] == candidate and payload["champion"] == previous and payload["outcome"] == "demoted"

    asyncio.run(_more(worker, candles, 3))  # the previous champion trades the next candles
    with worker.sessions() as session:
        newest = session.scalars(select(Decision).order_by(Decision.candle_ts.desc()).limit(3)).all()
    assert {d.model_version for d in newest} == {previous}


async def _more(worker: Worker, candles: pd.DataFrame, count: int) -> None:
    state = worker.states[KEY]
    rows = candles[candles["ts"] > state.last_ts].head(count)
    for row in rows.itertuples():
        worker.clock["now"] = int(row.ts) + BAR_MS  # type: ignore[attr-defined]
        candle = [int(row.ts), row.open, row.high, row.low, row.close, row.volume]
        await worker.on_candle(state, candle, int(row.ts) + BAR_MS)
        await worker.watch_champions()


def test_with_no_previous_champion_a_demotion_takes_the_market_flat_through_an_order(
    settings: Any, tmp_path: Path
) -> None:
    name = registered_model_name(MARKET)
    only = register(name, None)
    training = compute_features(real_candles("BTCUSDT", "1h", 400))
    # a backtest fitted on rows where RSI never left 0..10: every live row lands in its top bin (feature drift)
    skewed = {name: training[name].to_numpy() for name in feature_names()}
    skewed["rsi_14"] = np.linspace(0.0, 10.0, len(training))
    honest = run_long_backtest(settings, real_candles("BTCUSDT", "1h", 800).iloc[400:])
    client = MlflowClient()
    with mlflow.start_run() as run:
        mlflow.log_text(expectations(only, honest.returns, honest.positions, skewed).to_json(), EXPECTATIONS_ARTIFACT)
    client.set_model_version_tag(name, only, "backtest_run_id", run.info.run_id)
    crown(settings, tmp_path, [only])
    candles = real_candles("BTCUSDT", "1h", 800)
    start = int(candles["ts"].iloc[400])
    worker = watching_worker(settings, candles, start)
    asyncio.run(replay(worker, candles[candles["ts"] >= start].head(120), until=lambda w: w.models.model(KEY) is None))
    asyncio.run(_more(worker, candles, 2))

    assert client.get_registered_model(name).aliases == {}
    assert "feature_drift" in client.get_model_version(name, only).tags["demotion_reasons"]
    assert "rsi_14" in client.get_model_version(name, only).tags["demotion_reasons"]
    assert "flat" in (worker.models.flat(KEY) or "")
    assert worker.states[KEY].target == 0.0
    with worker.sessions() as session:
        sells = session.scalars(select(Order).where(Order.side == "sell")).all()
        last = session.scalars(select(Decision).order_by(Decision.candle_ts.desc()).limit(1)).one()
    assert len(sells) == 1 and last.target == 0.0 and last.model_version == ""
    units, _ = worker.broker.account(MARKET)  # type: ignore[attr-defined]
    assert units == pytest.approx(0.0, abs=1e-12)


class LongBacktest:
    def __init__(self, returns: np.ndarray, positions: np.ndarray) -> None:
        self.returns, self.positions = returns, positions


def run_long_backtest(settings: Any, candles: pd.DataFrame) -> LongBacktest:
    bars = Bars.from_candles(candles.reset_index(drop=True), "1h")
    execution = Execution.from_settings(settings.costs, settings.backtest)
    result = run_fast(bars, np.ones(len(bars.ts)), settings.limits, execution)
    curve = np.concatenate([[settings.backtest.initial_cash], result.equity])
    return LongBacktest(bar_returns(curve), result.targets)


def test_a_champion_living_its_backtest_is_not_demoted_and_its_record_lines_up_with_it(
    settings: Any, tmp_path: Path
) -> None:
    name = registered_model_name(MARKET)
    candles = real_candles("BTCUSDT", "1h", 1000)
    start = int(candles["ts"].iloc[400])
    live = candles[candles["ts"] >= start].head(600)
    backtest = run_long_backtest(settings, live)
    version = register(name, expectations("1", backtest.returns, backtest.positions, {}))
    crown(settings, tmp_path, [version])
    worker = watching_worker(settings, candles, start)
    asyncio.run(replay(worker, live))

    assert worker.models.model(KEY) is not None and worker.models.model(KEY).version == version
    assert worker.watch is not None and worker.watch.last[KEY] == []
    assert str(MlflowClient().get_model_version_by_alias(name, "champion").version) == version
    record = observed_record(worker.sessions, worker.states[KEY], version, 1000, feature_names())
    # bar i's realised return (equity after bar i over after bar i - 1) is the backtest's, fees included
    np.testing.assert_allclose(record.returns, backtest.returns[1:], rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(record.positions, backtest.positions[1:])
    assert set(record.features) == set(feature_names()) and np.isfinite(record.features["rsi_14"]).all()
    # `cta report`'s view of it: the live record beside the backtest, no departure (and no gate run here)
    report = build_report(settings, [MARKET], tmp_path / "report").read_text()
    assert "No gate has run for this market yet." in report
    assert f"### Champion v{version}: live against its backtest ({len(live) - 1:,} bars of live returns)" in report
    assert "Monitoring finds no departure from its backtest." in report and "| worst drawdown |" in report


def test_a_demotion_waits_for_a_registry_that_is_down_then_happens_at_the_next_bar(
    settings: Any, tmp_path: Path
) -> None:
    """With the registry down (the model manager's probe says so) a breach moves nothing and costs no MLflow
    retries inside the loop; once the registry answers, the next bar's assessment demotes."""
    name = registered_model_name(MARKET)
    previous = register(name, None)
    candidate = register(name, promised("2", mean=0.005, std=0.002))
    crown(settings, tmp_path, [previous, candidate])
    candles = real_candles("BTCUSDT", "1h", 800)
    start = int(candles["ts"].iloc[400])
    worker = watching_worker(settings, candles, start)
    asyncio.run(replay(worker, candles[candles["ts"] >= start].head(12)))  # loaded; too few bars to judge
    worker.models.probe = lambda: "connection refused (test)"
    asyncio.run(_more(worker, candles, MONITOR["min_bars"] + 2 * MONITOR["every_bars"]))
    assert worker.watch is not None and worker.watch.last[KEY]  # breached, but the registry is down
    assert str(MlflowClient().get_model_version_by_alias(name, "champion").version) == candidate
    assert "verdict" not in MlflowClient().get_model_version(name, candidate).tags or (
        MlflowClient().get_model_version(name, candidate).tags["verdict"] != "demoted"
    )

    worker.models.probe = None
    asyncio.run(_more(worker, candles, 1))  # the very next bar
    assert str(MlflowClient().get_model_version_by_alias(name, "champion").version) == previous
    assert worker.models.model(KEY) is not None and worker.models.model(KEY).version == previous
