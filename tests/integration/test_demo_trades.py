"""The demo shows trading, every time (issue 20, item 4), on real components: MLflow on a SQLite file, the local
exchange over HTTP, Feast's SQLite online store, the candle lake, the worker `cta serve` runs.

- A worker whose exchange cannot serve its history (the replay clock behind the last decision, as on a second
  `make demo`) takes the candles from the lake, smoke-tests the champion on real feature rows and serves it,
  instead of "warmed 0 candles ... no feature rows to smoke-test the model with" and nothing served.
- A champion that could not be smoke-tested for lack of rows is tried again at the next poll, not refused until
  the alias moves.
- The demo's paper session, run twice in the same place, ends both times with paper orders and fills (a new
  paper account each run, the previous one kept), and the demo's summary names them and where to look."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from mlflow.models import infer_signature

from app.demo import paper_session
from app.serve import serving_runtime
from cta.candles import normalize_candles
from cta.components import make_lake
from cta.config import Settings, deep_merge, load_settings
from cta.exchange_server.settings import BUNDLED_CANDLES_DIR
from cta.lake import Market
from cta.registry import promote, promotion_lock, registered_model_name
from features.compute import history_needed
from features.registry import feature_names
from serving.db import make_engine, session_factory, upgrade
from serving.models import Decision
from serving.models_manager import ModelManager
from tests.conftest import CONFIG_DIR
from tests.exchange_fixtures import running_exchange

pytestmark = pytest.mark.integration

BTC = Market("binance", "BTC/USDT", "1h")
HOUR_MS = 3_600_000
LAKE_END_MS = 1_655_683_200_000  # 2022-06-20 00:00 UTC: the lake holds the candles that closed by then
LAKE_HOURS = 400


class Momentum(mlflow.pyfunc.PythonModel):  # type: ignore[misc]
    """Long after a rising hour, flat after a falling one: a champion that trades often (a test needs orders)."""

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> Any:
        return (model_input["ret_1"].to_numpy(dtype="float64") > 0).astype("float64")


def settings_for(shared: Path, url: str, work: Path | None = None, **sections: Any) -> Settings:
    """The demo profile, one market: the registry and the lake under `shared`, the rest under `work`."""
    work = work or shared
    base: dict[str, Any] = {
        "paths": {"data_dir": str(shared / "data"), "logs_dir": str(work / "logs")},
        "exchange": {"api_url": url, "market_time": "replay"},
        "markets": {"symbols": ["BTC/USDT"], "timeframes": ["1h"]},
        "lake": {"uri": str(shared / "lake")},
        "features": {"feast_dir": str(work / "feast"), "table_dir": str(work / "features")},
        "training": {"tracking_uri": f"sqlite:///{shared / 'mlflow.db'}", "artifact_root": str(shared / "mlruns")},
        "serving": {"database_url": f"sqlite:///{work / 'serving' / 'demo.db'}", "api_port": 0},
    }
    return load_settings(env={}, config_dir=CONFIG_DIR, profile="demo", overrides=deep_merge(base, sections))


def bundled_btc(first_ms: int, end_ms: int) -> pd.DataFrame:
    """The bundled real BTC/USDT 1h candles with first_ms <= open < end_ms."""
    with gzip.open(BUNDLED_CANDLES_DIR / "binance_BTCUSDT_1h.csv.gz", "rt") as f:
        frame = pd.read_csv(f).rename(columns={"timestamp": "ts"})
    return normalize_candles(frame[(frame["ts"] >= first_ms) & (frame["ts"] < end_ms)])


def fill_lake(settings: Settings) -> None:
    """What the pipeline's ingestion leaves: the candles up to LAKE_END_MS."""
    make_lake(settings).upsert(BTC, bundled_btc(LAKE_END_MS - LAKE_HOURS * HOUR_MS, LAKE_END_MS))


def register_champion(settings: Settings) -> None:
    mlflow.set_tracking_uri(settings.training.tracking_uri)
    example = pd.DataFrame([dict.fromkeys(feature_names(), 0.01)])
    model = Momentum()
    with mlflow.start_run():
        mlflow.pyfunc.log_model(
            name="model",
            python_model=model,
            signature=infer_signature(example, model.predict(None, example)),
            registered_model_name=registered_model_name(BTC),
        )
    name = registered_model_name(BTC)
    promote(MlflowClient(), name, "1", expected_champion=None, reason="test", lock=promotion_lock(settings, name))


@pytest.fixture(scope="module")
def champion_and_lake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One registry (its champion) and one lake for the module (logging a model is slow); read only."""
    shared = tmp_path_factory.mktemp("shared")
    settings = settings_for(shared, "http://127.0.0.1:1")
    register_champion(settings)
    fill_lake(settings)
    yield shared


@pytest.mark.parametrize("lake_covers_it", [True, False], ids=["lake-holds-the-history", "lake-stops-earlier"])
def test_worker_without_exchange_history_smoke_tests_the_champion_on_the_lakes_candles(
    champion_and_lake: Path, tmp_path: Path, lake_covers_it: bool
) -> None:
    """The second `make demo` before the fix: the worker restores its last decision (a candle the exchange's replay
    clock has not reached), the exchange serves none of the history, no feature row, the champion refused. With the
    lake holding that history the worker is warmed from it; with a lake that stops earlier (the first demo's
    ingestion, days before its last paper decision) the champion is still smoke-tested on the lake's newest rows."""
    last_decided = LAKE_END_MS - HOUR_MS if lake_covers_it else LAKE_END_MS + 10 * 24 * HOUR_MS
    with running_exchange(start="2022-06-10T00:00:00Z") as exchange:  # ten days behind the last decision
        settings = settings_for(champion_and_lake, exchange.url, tmp_path, serving={"max_bars": 1})
        engine = make_engine(settings.serving.database_url)
        upgrade(engine)
        with session_factory(engine)() as session:
            session.add(
                Decision(
                    market=str(BTC),
                    candle_ts=last_decided,
                    model_name=registered_model_name(BTC),
                    model_version="1",
                    feature_hash="",
                    inputs="{}",
                    prediction=0.0,
                    target=0.0,
                    delta=0.0,
                    reason="",
                )
            )
            session.commit()
        engine.dispose()

        async def started() -> tuple[Any, str | None, int, int]:
            async with serving_runtime(settings) as runtime:
                state = runtime.worker.states[str(BTC)]
                return (
                    runtime.worker.models.model(str(BTC)),
                    runtime.worker.models.problem(str(BTC)),
                    len(state.candles),
                    len(state.features),
                )

        model, problem, candles, features = asyncio.run(started())
    assert model is not None and model.version == "1", problem
    assert problem is None
    if lake_covers_it:
        assert candles >= history_needed() and features > 0  # warmed from the lake, ready for the next candle


def test_a_champion_waiting_for_rows_is_smoke_tested_at_the_next_poll(champion_and_lake: Path) -> None:
    settings = settings_for(champion_and_lake, "http://127.0.0.1:1")
    mlflow.set_tracking_uri(settings.training.tracking_uri)
    rows = pd.DataFrame(np.full((8, len(feature_names())), 0.01), columns=feature_names())
    available = [pd.DataFrame(columns=feature_names()), rows]
    models = ModelManager(MlflowClient(), {str(BTC): registered_model_name(BTC)}, lambda _: available.pop(0), poll_s=0)
    asyncio.run(models.refresh(str(BTC)))
    assert models.model(str(BTC)) is None
    assert "not smoke-tested yet" in (models.problem(str(BTC)) or "")
    asyncio.run(models.refresh(str(BTC)))  # the same version, now with rows: smoke-tested and served
    served = models.model(str(BTC))
    assert served is not None and served.version == "1" and models.problem(str(BTC)) is None


@pytest.mark.slow
def test_the_demos_paper_session_ends_with_orders_and_fills_every_time(
    champion_and_lake: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from app.cli import render

    said: list[str] = []
    sessions = []
    for _ in range(2):  # `make demo`, then `make demo` again: each starts its own exchange
        with running_exchange(start="2022-06-01T00:00:00Z") as exchange:  # behind the lake, as the demo's may be
            settings = settings_for(champion_and_lake, exchange.url, tmp_path, serving={"max_bars": 12})
            sessions.append(asyncio.run(paper_session(settings, exchange, said.append)))
    first, second = sessions
    for session in (first, second):
        [row] = session.rows
        assert row["model"] == "v1" and row["bars"] >= 12
        assert session.orders and all(order["fills"] == 1 for order in session.orders), session.orders
        assert row["fills"] == len(session.orders)
        assert session.first_ms == LAKE_END_MS  # the first candle after everything the lake holds
    assert first.orders == second.orders  # the same candles, the same champion: the same trades
    assert first.archived is None and second.archived is not None and second.archived.exists()
    assert any("new paper account" in line for line in said)

    render.print_trading_summary(second)
    shown = capsys.readouterr().out
    assert f"binance:BTC/USDT:1h: champion v1: {len(second.orders)} orders, {len(second.orders)} fills" in shown
    assert "demo.db" in shown
