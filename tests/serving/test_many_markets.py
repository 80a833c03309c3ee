"""One worker, several markets (`Worker.step`): the due markets' candles are fetched concurrently, at most
`serving.fetch_concurrency` at a time, each asking for just the candles that closed since its last one; the
decisions are the ones a one-at-a-time walk makes (same markets, candles, predictions, targets, orders); a failed
fetch raises after the markets before it were decided. The real worker (Feast, the registry's champions, decide,
risk, the paper broker) on real BTC/USDT and ETH/USDT candles."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from mlflow import MlflowClient
from sqlalchemy import select

from cta.execution import Execution
from cta.lake import Market
from cta.registry import configure_mlflow, promote, registered_model_name, registry_lock
from features.feast_store import feature_store_for
from serving.db import make_engine, session_factory, upgrade
from serving.models import Decision, Order
from serving.models_manager import ModelManager
from serving.paper import PaperBroker
from serving.worker import Worker
from tests.conftest import load_test_settings
from tests.factories import real_candles
from tests.serving.test_replay_parity import BAR_MS, log_hysteresis

pytestmark = pytest.mark.integration

BTC, ETH = Market("binance", "BTC/USDT", "1h"), Market("binance", "ETH/USDT", "1h")
START_ROW = 600


class Venue:
    """Both markets' real candles on a clock the test moves; records each fetch's limit and how many fetches
    were in flight at once. `fail` names a market whose next fetch raises."""

    def __init__(self) -> None:
        self.candles = {str(BTC): real_candles("BTCUSDT", "1h", 900), str(ETH): real_candles("ETHUSDT", "1h", 900)}
        self.now = int(self.candles[str(BTC)]["ts"].iloc[START_ROW])
        self.in_flight = self.most_in_flight = 0
        self.limits: list[int] = []
        self.fail: str | None = None

    async def now_ms(self) -> int:
        return self.now

    async def fetch(self, market: Market, since: int, limit: int) -> list[list[Any]]:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(0.01)  # a round trip, so that concurrent fetches overlap
            if self.fail == str(market):
                self.fail = None
                raise ConnectionError(f"{market}: the venue did not answer")
            frame = self.candles[str(market)]
            chunk = frame[frame["ts"] >= since].head(limit)
            self.limits.append(limit)
            return [[int(r.ts), r.open, r.high, r.low, r.close, r.volume] for r in chunk.itertuples()]
        finally:
            self.in_flight -= 1


def make_worker(tmp_path: Path, venue: Venue, concurrency: int) -> Worker:
    settings = load_test_settings(
        paths={"data_dir": str(tmp_path / "data"), "logs_dir": str(tmp_path / "logs")},
        markets={"symbols": ["BTC/USDT", "ETH/USDT"], "timeframes": ["1h"]},
        training={"tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "artifact_root": str(tmp_path / "mlruns")},
        features={"feast_dir": str(tmp_path / "feast"), "table_dir": str(tmp_path / "features")},
        serving={
            "database_url": f"sqlite:///{tmp_path / 'serving.db'}",
            "fetch_concurrency": concurrency,
            "risk": {"daily_loss_limit": 1.0, "max_drawdown_halt": 1.0},
        },
    )
    configure_mlflow(settings)
    for market in (BTC, ETH):
        name = registered_model_name(market)
        lock = registry_lock(settings.training.tracking_uri, tmp_path / "locks", name)
        promote(MlflowClient(), name, log_hysteresis(name), expected_champion=None, reason="test", lock=lock)
    engine = make_engine(settings.serving.database_url)
    upgrade(engine)
    sessions = session_factory(engine)
    store = feature_store_for(settings.features)
    store.apply()
    names = {str(m): registered_model_name(m) for m in (BTC, ETH)}
    return Worker(
        settings,
        markets=[BTC, ETH],
        sessions=sessions,
        broker=PaperBroker(
            sessions, Execution.from_settings(settings.costs, settings.backtest), "cta", lambda: venue.now
        ),
        models=ModelManager(MlflowClient(), names, poll_s=3600),
        store=store,
        fetch_candles=venue.fetch,
        now_ms=venue.now_ms,
    )


async def trade(worker: Worker, venue: Venue, hours: list[int]) -> None:
    await worker.start()
    for market in worker.states:
        await worker.models.refresh(market)
    for step in hours:
        venue.now += step * BAR_MS
        await worker.step()


def decisions(worker: Worker) -> pd.DataFrame:
    with worker.sessions() as session:
        rows = session.execute(
            select(Decision.market, Decision.candle_ts, Decision.prediction, Decision.target, Decision.reason)
        ).all()
        orders = session.execute(select(Order.market, Order.candle_ts, Order.side, Order.amount)).all()
    frame = pd.DataFrame(rows, columns=["market", "candle_ts", "prediction", "target", "reason"])
    frame["orders"] = len(orders)
    return frame.sort_values(["market", "candle_ts"]).reset_index(drop=True)


HOURS = [1] * 40 + [3] + [1] * 40  # one step catches up three closed candles per market


def test_concurrent_fetches_decide_as_a_sequential_walk(tmp_path: Path) -> None:
    sequential, concurrent = Venue(), Venue()
    one = make_worker(tmp_path / "one", sequential, concurrency=1)  # each run on its own registry, one after the other
    asyncio.run(trade(one, sequential, HOURS))
    many = make_worker(tmp_path / "many", concurrent, concurrency=8)
    asyncio.run(trade(many, concurrent, HOURS))
    assert (sequential.most_in_flight, concurrent.most_in_flight) == (1, 2)
    expected = decisions(one)
    assert len(expected) == 2 * (len(HOURS) + 2) and expected["orders"].iloc[0] > 0
    pd.testing.assert_frame_equal(decisions(many), expected)
    # each step asks for what closed since the last candle: one candle, three after the 3-hour step
    steady = concurrent.limits[2:]  # the start-up's warm-up fetches first
    assert sorted(set(steady)) == [1, 3] and steady.count(3) == 2


def test_a_failed_fetch_raises_after_the_markets_before_it(tmp_path: Path) -> None:
    venue = Venue()
    worker = make_worker(tmp_path, venue, concurrency=8)
    asyncio.run(trade(worker, venue, [1] * 5))
    before = decisions(worker).groupby("market").size().to_dict()
    venue.fail = str(ETH)
    with pytest.raises(ConnectionError, match="ETH/USDT"):
        asyncio.run(trade_one_more(worker, venue))
    after = decisions(worker).groupby("market").size().to_dict()
    assert after == {str(BTC): before[str(BTC)] + 1, str(ETH): before[str(ETH)]}
    asyncio.run(trade_one_more(worker, venue, hours=0))  # the next step catches ETH up
    assert decisions(worker).groupby("market").size().to_dict() == {
        str(BTC): after[str(BTC)],
        str(ETH): after[str(BTC)],
    }


async def trade_one_more(worker: Worker, venue: Venue, hours: int = 1) -> None:
    venue.now += hours * BAR_MS
    await worker.step()
