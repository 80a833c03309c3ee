"""The decision's path after its trim (issue: p99 <= 5 ms): the decision uses the feature row as computed and the
online store gets that row after the order is sent; a failed online write loses no decision; the decision, the
order intent and their ledger entries are still committed before the order (the ledger verifies). The real worker
(Feast, the registry's champion, decide, risk, the paper broker) on real candles."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from sqlalchemy import select

from serving.ledger import verify
from serving.metrics import WorkerMetrics
from serving.models import Decision, LedgerEntry, Order
from serving.replay import replay_worker
from tests.factories import real_candles
from tests.serving.test_live_parameters import hysteresis_settings, run_bars
from tests.serving.test_replay_parity import BAR_MS, MARKET

pytestmark = pytest.mark.integration


@pytest.fixture
def settings(tmp_path: Path) -> Any:
    return hysteresis_settings(tmp_path)


def worker_on(settings: Any) -> tuple[Any, pd.DataFrame]:
    candles = real_candles("BTCUSDT", "1h", 800)
    start = int(candles["ts"].iloc[600])
    clock = {"now": start}
    worker = replay_worker(settings, MARKET, candles, clock)
    worker.clock = clock  # type: ignore[attr-defined]
    worker.metrics = WorkerMetrics()
    return worker, candles[candles["ts"] >= start]


def test_the_online_store_holds_the_row_each_decision_used(settings: Any) -> None:
    worker, rows = worker_on(settings)

    async def scenario() -> None:
        await worker.start()
        await worker.models.refresh(str(MARKET))
        for i in range(60):
            await run_bars(worker, rows.iloc[i : i + 1])
            stamp, online = worker.store.read_online(str(MARKET))
            with worker.sessions() as session:
                decision = session.scalars(select(Decision).order_by(Decision.id.desc()).limit(1)).one()
            assert stamp == pd.Timestamp(decision.candle_ts + BAR_MS, unit="ms", tz="UTC")
            assert online == json.loads(decision.inputs)  # exactly the row it decided on, bit for bit

    asyncio.run(scenario())
    with worker.sessions() as session:
        orders = session.scalars(select(Order)).all()
        assert orders, "the champion traded"
        assert all(o.decision_id is not None for o in orders)
        kinds = session.scalars(select(LedgerEntry.kind)).all()
        assert kinds.count("decision") == 60 and kinds.count("order") == len(orders)
        assert verify(session).ok


def test_a_failed_online_write_loses_no_decision(settings: Any, caplog: pytest.LogCaptureFixture) -> None:
    worker, rows = worker_on(settings)

    def broken(*_: Any, **__: Any) -> None:
        raise OSError("the online store is gone")

    async def scenario() -> None:
        await worker.start()
        await worker.models.refresh(str(MARKET))
        worker.store.write_online = broken
        with caplog.at_level(logging.WARNING, logger="serving.worker"):
            await run_bars(worker, rows.iloc[:40])

    asyncio.run(scenario())
    with worker.sessions() as session:
        assert len(session.scalars(select(Decision.id)).all()) == 40
        assert session.scalars(select(Order.id)).all(), "orders were still sent"
        assert verify(session).ok
    assert worker.metrics._values.errors[("online_store_write",)].value == 40
    assert "online feature store write failed: OSError: the online store is gone" in caplog.text
