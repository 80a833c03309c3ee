"""`cta serve` end to end against the local exchange over HTTP: the worker trades the registry's
champion (paper and real ccxt orders), obeys a persisted kill switch across restarts, and live mode
refuses unsafe settings."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from mlflow.models import infer_signature
from sqlalchemy import func, select

from app.serve import UnsafeLiveSettings, live_safety_problems, serve, serving_runtime
from cta import exchange as exchange_module
from cta.config import Settings, deep_merge, load_settings
from cta.lake import Market
from cta.registry import promote, promotion_lock, registered_model_name
from features.registry import feature_names
from serving.control import TradingState, set_trading_state, trading_state
from serving.db import make_engine, session_factory
from serving.ledger import verify
from serving.models import Decision, LedgerEntry, Order
from serving.models_manager import ModelManager
from serving.orders import OrderStatus
from tests.conftest import CONFIG_DIR
from tests.exchange_fixtures import EXCHANGE_API_KEY, EXCHANGE_API_SECRET, running_exchange

pytestmark = pytest.mark.integration

BTC = Market("binance", "BTC/USDT", "1h")
KEYS = {"CTA_API_KEY": EXCHANGE_API_KEY, "CTA_API_SECRET": EXCHANGE_API_SECRET}


class ConstantPosition(mlflow.pyfunc.PythonModel):  # type: ignore[misc]
    def __init__(self, position: float) -> None:
        self.position = position

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> Any:
        return np.full(len(model_input), self.position)


def settings_for(tmp_path: Path, url: str, env: dict[str, str] | None = None, **sections: Any) -> Settings:
    base: dict[str, Any] = {
        "paths": {"data_dir": str(tmp_path / "data"), "logs_dir": str(tmp_path / "logs")},
        "exchange": {"api_url": url, "market_time": "replay"},
        "markets": {"symbols": ["BTC/USDT"], "timeframes": ["1h"]},
        "features": {"feast_dir": str(tmp_path / "feast"), "table_dir": str(tmp_path / "features")},
        "training": {"tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "artifact_root": str(tmp_path / "mlruns")},
        "serving": {
            "database_url": f"sqlite:///{tmp_path / 'serving.db'}",
            "max_bars": 3,
            "poll_interval_s": 0.05,
            "api_port": 0,
            # the replay runs 10 market hours per second: start-up takes several "hours" (tested elsewhere)
            "risk": {"stale_after_bars": 1000},
        },
    }
    return load_settings(env=env or {}, config_dir=CONFIG_DIR, overrides=deep_merge(base, sections))


def register_model(settings: Settings, position: float) -> None:
    """A new version of BTC/USDT's model that always wants `position`."""
    mlflow.set_tracking_uri(settings.training.tracking_uri)
    example = pd.DataFrame([dict.fromkeys(feature_names(), 0.0)])
    model = ConstantPosition(position)
    with mlflow.start_run():
        mlflow.pyfunc.log_model(
            name="model",
            python_model=model,
            signature=infer_signature(example, model.predict(None, example)),
            registered_model_name=registered_model_name(BTC),
        )


def register_champion(settings: Settings, position: float) -> None:
    register_model(settings, position)
    lock = promotion_lock(settings, registered_model_name(BTC))
    promote(MlflowClient(), registered_model_name(BTC), "1", expected_champion=None, reason="test", lock=lock)


def counts(settings: Settings) -> tuple[int, int, list[str]]:
    sessions = session_factory(make_engine(settings.serving.database_url))
    with sessions() as session:
        orders = session.scalar(select(func.count(Order.id))) or 0
        decisions = session.scalar(select(func.count(Decision.id))) or 0
        statuses = list(session.scalars(select(Order.status)))
    return int(orders), int(decisions), statuses


def test_paper_worker_trades_the_champion_and_the_kill_switch_survives_restarts(tmp_path: Path) -> None:
    with running_exchange(speed=36_000.0) as exchange:
        settings = settings_for(tmp_path, exchange.url)
        register_champion(settings, 1.0)
        sessions = session_factory(make_engine(settings.serving.database_url))

        rows = asyncio.run(serve(settings))
        assert rows[0]["model"] == "v1" and rows[0]["bars"] == 3 and rows[0]["orders"] == 1
        assert rows[0]["fills"] == 1  # bought at the open of the candle after the first decision
        orders, decisions, statuses = counts(settings)
        assert (orders, decisions, statuses) == (1, 3, [OrderStatus.FILLED.value])
        with sessions() as session:
            assert verify(session).ok
            kinds = set(session.scalars(select(LedgerEntry.kind)))
            assert {"promotion", "decision", "order", "fill"} <= kinds
            decision = session.scalars(select(Decision).order_by(Decision.id)).first()
            assert decision is not None and decision.model_version == "1" and len(decision.feature_hash) == 16

        set_trading_state(sessions, TradingState.HALTED, "drill", "test")
        exit_settings = settings.model_copy(update={"serving": settings.serving.model_copy(update={"max_bars": 3})})
        register_exit = 0.0
        client = MlflowClient()
        register_model(settings, register_exit)  # v2 would exit: HALTED blocks every order
        client.set_registered_model_alias(registered_model_name(BTC), "champion", "2")
        asyncio.run(serve(exit_settings))
        assert counts(settings)[0] == 1  # zero orders after the switch, across a restart
        assert trading_state(sessions).state == TradingState.HALTED.value
        with sessions() as session:
            blocked = session.scalars(select(Decision.reason).where(Decision.delta != 0, Decision.id > 3)).all()
        assert blocked and all("HALTED" in reason or "blocked" in reason for reason in blocked)

        set_trading_state(sessions, TradingState.REDUCING, "exits only", "test")
        asyncio.run(serve(exit_settings))
        orders, _, statuses = counts(settings)
        assert orders == 2 and statuses.count(OrderStatus.FILLED.value) == 2  # the exit was allowed


def test_ccxt_worker_places_real_orders_on_the_exchange(tmp_path: Path) -> None:
    with running_exchange(speed=36_000.0) as exchange:
        # 10 market hours pass per second here: keep 10 % of the cash free for the move before the fill
        settings = settings_for(tmp_path, exchange.url, env=KEYS, serving={"broker": "ccxt", "cash_buffer": 0.1})
        register_champion(settings, 1.0)
        rows = asyncio.run(serve(settings))
        _, _, statuses = counts(settings)
        assert rows[0]["orders"] == 1 and rows[0]["fills"] >= 1, (rows, statuses)
        assert statuses in ([OrderStatus.FILLED.value], [OrderStatus.PARTIALLY_FILLED.value])
        assert exchange.request_count("/api/v3/order", "POST") == 1


def test_live_mode_refuses_unsafe_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with running_exchange(withdrawals_enabled=True) as exchange:
        no_keys = settings_for(tmp_path, exchange.url, mode="live")
        with pytest.raises(UnsafeLiveSettings, match=r"serving.broker = ccxt.*CTA_API_KEY"):
            asyncio.run(serve(no_keys))

        live = settings_for(tmp_path, exchange.url, env=KEYS, mode="live", serving={"broker": "ccxt"})
        problems = asyncio.run(check_live(live))
        assert any("may withdraw" in p for p in problems)
        assert any("no champion" in p for p in problems)
        assert not any("clock" in p for p in problems)

        real_clock = exchange_module.local_clock_ms
        monkeypatch.setattr(exchange_module, "local_clock_ms", lambda: real_clock() + 5_000)  # host clock 5 s fast
        problems = asyncio.run(check_live(live))
        assert any(re.search(r"clock is -[45]\d{3} ms off", p) for p in problems), problems


async def check_live(settings: Settings) -> list[str]:
    from cta.components import make_exchange

    models = ModelManager(
        MlflowClient(settings.training.tracking_uri),
        {str(BTC): registered_model_name(BTC)},
        lambda m: pd.DataFrame(),
        poll_s=1,
    )
    await models.refresh(str(BTC))
    async with make_exchange(settings) as exchange:
        return await live_safety_problems(settings, exchange, models)


def test_serving_runtime_has_no_default_api_token(tmp_path: Path) -> None:
    import aiohttp

    async def probe(settings: Settings) -> tuple[int, int]:
        async with (
            serving_runtime(settings) as runtime,
            aiohttp.ClientSession() as client,
            client.get(f"{runtime.api_url}/healthz") as health,
            client.get(f"{runtime.api_url}/api/positions") as positions,
        ):
            return health.status, positions.status

    with running_exchange(speed=36_000.0) as exchange:
        assert asyncio.run(probe(settings_for(tmp_path, exchange.url))) == (200, 503)


@pytest.mark.production
def test_production_stores_worker_on_postgresql_and_redis(tmp_path: Path, postgresql_database: Any) -> None:
    """The production set-up of the worker: its database on PostgreSQL (a fresh schema) and Feast's
    online store on Redis."""
    schema = postgresql_database.connect_args["options"].removeprefix("-csearch_path=")
    url = f"{postgresql_database.url}?options=-csearch_path%3D{schema}"
    with running_exchange(speed=36_000.0) as exchange:
        settings = settings_for(
            tmp_path,
            exchange.url,
            serving={"database_url": url},
            features={"online_store": "redis", "redis_url": "127.0.0.1:6379"},
        )
        register_champion(settings, 1.0)
        rows = asyncio.run(serve(settings))
        assert rows[0]["orders"] == 1 and rows[0]["fills"] == 1
        sessions = session_factory(make_engine(url))
        with sessions() as session:
            assert verify(session).ok and session.scalar(select(func.count(Decision.id))) == 3
