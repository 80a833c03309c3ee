"""The serving worker over candles held in memory, on a clock the caller moves (replay parity, benchmarks).

The replay parity test and the serving benchmark feed candles through it bar by bar. Everything else is what
`cta serve` runs (the Worker, the paper broker, the Feast online store, the registry's champion); only the candle
source and the clock differ."""

from __future__ import annotations

from typing import Any

import pandas as pd
from mlflow import MlflowClient

from cta.config import Settings
from cta.execution import Execution
from cta.lake import Market
from cta.registry import registered_model_name
from features.feast_store import feature_store_for
from serving.db import make_engine, session_factory, upgrade
from serving.models_manager import ModelManager
from serving.paper import PaperBroker
from serving.worker import Worker


def replay_worker(settings: Settings, market: Market, candles: pd.DataFrame, clock: dict[str, int]) -> Worker:
    """A paper-trading Worker for `market` whose candles are `candles` (sorted by `ts`) and whose time is
    `clock["now"]` (epoch ms). Its database and Feast store are the ones `settings` name."""
    engine = make_engine(settings.serving.database_url)
    upgrade(engine)
    sessions = session_factory(engine)
    opens = candles["ts"].to_numpy()

    async def now_ms() -> int:
        return clock["now"]

    async def fetch(_: Market, since: int, limit: int) -> list[list[Any]]:
        chunk = candles.iloc[int(opens.searchsorted(since)) :].head(limit)
        return [[int(r.ts), r.open, r.high, r.low, r.close, r.volume] for r in chunk.itertuples()]

    store = feature_store_for(settings.features)
    store.apply()
    execution = Execution.from_settings(settings.costs, settings.backtest)
    broker = PaperBroker(sessions, execution, settings.serving.client_order_prefix, lambda: clock["now"])
    models = ModelManager(MlflowClient(), {str(market): registered_model_name(market)}, poll_s=3600)
    return Worker(
        settings,
        markets=[market],
        sessions=sessions,
        broker=broker,
        models=models,
        store=store,
        fetch_candles=fetch,
        now_ms=now_ms,
    )
