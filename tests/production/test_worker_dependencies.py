"""The trading worker when its dependencies are down: the tracking server or PostgreSQL not running when it starts,
PostgreSQL lost while it trades.

The worker (`app.serve.serve`, as `cta serve` runs it, in-process) answers `/readyz` 503 with the reason, logs one
line per check naming what is down, checks again after a growing, bounded delay, and trades (paper broker, local
exchange) once they are back: no crash, one order for the one position it wants, one decision per candle with no
candle skipped, and a ledger that verifies.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from mlflow.models import infer_signature
from mlflow.pyfunc.model import PythonModel
from sqlalchemy import select
from sqlalchemy.engine import make_url

from app.serve import serve
from cta.config import Settings, load_settings
from cta.lake import Market
from cta.registry import promote, registered_model_name, registry_lock
from features.registry import feature_names
from serving.db import make_engine, session_factory
from serving.ledger import verify
from serving.models import Decision, Order
from serving.orders import OrderStatus
from tests.conftest import CONFIG_DIR, free_port
from tests.exchange_fixtures import running_exchange
from tests.production.conftest import MlflowServer, MlflowStack, TcpProxy, fresh_database

pytestmark = [pytest.mark.integration, pytest.mark.production]

BTC = Market("binance", "BTC/USDT", "1h")
HOUR_MS = 3_600_000
SPEED = 7_200.0  # two market hours per second
RETRY = {"dependency_retry_s": 0.2, "dependency_retry_max_s": 1.0}
DELAYS = re.compile(r"check #(\d+) in ([\d.]+) s")


class ConstantPosition(PythonModel):  # type: ignore[misc]
    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> Any:
        return np.full(len(model_input), 1.0)


def register_champion(tracking_uri: str, locks: Path) -> None:
    """v1 of BTC/USDT's model (always long), promoted to champion, in the registry at `tracking_uri`."""
    mlflow.set_tracking_uri(tracking_uri)
    example = pd.DataFrame([dict.fromkeys(feature_names(), 0.0)])
    model = ConstantPosition()
    name = registered_model_name(BTC)
    with mlflow.start_run():
        mlflow.pyfunc.log_model(
            name="model",
            python_model=model,
            signature=infer_signature(example, model.predict(None, example)),
            registered_model_name=name,
            pip_requirements=["numpy", "pandas"],
        )
    client = MlflowClient(tracking_uri)
    promote(client, name, "1", expected_champion=None, reason="test", lock=registry_lock(tracking_uri, locks, name))


def worker_settings(
    tmp_path: Path, exchange_url: str, *, tracking_uri: str, database_url: str, **serving: Any
) -> Settings:
    base: dict[str, Any] = {
        "paths": {"data_dir": str(tmp_path / "data"), "logs_dir": str(tmp_path / "logs")},
        "exchange": {"api_url": exchange_url, "market_time": "replay"},
        "markets": {"symbols": ["BTC/USDT"], "timeframes": ["1h"]},
        "features": {"feast_dir": str(tmp_path / "feast"), "table_dir": str(tmp_path / "features")},
        "training": {"tracking_uri": tracking_uri, "artifact_root": str(tmp_path / "mlruns")},
        "serving": {
            "database_url": database_url,
            "poll_interval_s": 0.05,
            "model_poll_s": 0.5,
            "api_port": free_port(),
            "risk": {"stale_after_bars": 1000},  # the replay runs fast: start-up takes several market hours
            **RETRY,
            **serving,
        },
    }
    return load_settings(env={}, config_dir=CONFIG_DIR, overrides=base)


async def readiness(api: str) -> tuple[int, dict[str, Any]] | None:
    """(status, body) of GET /readyz, or None when the API does not answer."""
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session,
            session.get(f"{api}/readyz") as response,
        ):
            return response.status, await response.json()
    except (aiohttp.ClientError, OSError, TimeoutError):
        return None


async def wait_for(check: Callable[[], Any], timeout_s: float, what: str) -> Any:
    """Await `check()` every 50 ms until it returns something truthy; that value."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        value = await check()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        await asyncio.sleep(0.05)


def not_ready_because(api: str, words: str) -> Callable[[], Any]:
    async def check() -> Any:
        answer = await readiness(api)
        if answer is not None and answer[0] == 503 and any(words in reason for reason in answer[1]["reasons"]):
            return answer
        return None

    return check


def ready(api: str) -> Callable[[], Any]:
    async def check() -> bool:
        answer = await readiness(api)
        return answer is not None and answer[0] == 200

    return check


def retry_delays(caplog: pytest.LogCaptureFixture, words: str) -> list[list[float]]:
    """The delays of the worker's "not ready: <words> ...; check #N in X s" lines: one list per outage."""
    outages: list[list[float]] = []
    for record in caplog.records:
        message = record.getMessage()
        if record.name == "app.serve" and message.startswith("not ready:") and words in message:
            match = DELAYS.search(message)
            assert match is not None, message
            if match.group(1) == "2":  # the first check of a wait failed: a new outage
                outages.append([])
            outages[-1].append(float(match.group(2)))
    return outages


def assert_growing_and_bounded(delays: list[float]) -> None:
    assert len(delays) >= 3, delays
    assert delays[:3] == [0.2, 0.4, 0.8], delays
    assert all(b >= a for a, b in itertools.pairwise(delays)) and max(delays) <= 1.0, delays


def assert_books(database_url: str) -> list[int]:
    """One order (the model always wants the same long position), filled; one decision per candle, none skipped;
    the ledger verifies. Returns the decided candles."""
    engine = make_engine(database_url)
    try:
        with session_factory(engine)() as session:
            orders = session.scalars(select(Order)).all()
            candles = list(session.scalars(select(Decision.candle_ts).order_by(Decision.candle_ts)))
            assert verify(session).ok
    finally:
        engine.dispose()
    assert [(o.side, o.status) for o in orders] == [("buy", OrderStatus.FILLED.value)], orders
    assert len(candles) == len(set(candles)), "a candle was decided twice"
    assert all(b - a == HOUR_MS for a, b in itertools.pairwise(candles)), f"a candle was skipped: {candles}"
    return candles


@pytest.mark.slow
def test_worker_waits_for_the_tracking_server_then_trades(
    mlflow_stack: MlflowStack, no_storage_credentials: None, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="app.serve")
    register_champion(mlflow_stack.server.url, tmp_path / "locks")
    # the worker's tracking server: not running yet (a free port); later a server on the same store and bucket
    late = MlflowServer(
        mlflow_stack.database_url,
        mlflow_stack.server.artifacts_destination,
        mlflow_stack.s3_endpoint,
        tmp_path / "late-server.log",
    )
    with running_exchange(speed=SPEED) as exchange:
        settings = worker_settings(
            tmp_path,
            exchange.url,
            tracking_uri=late.url,
            database_url=f"sqlite:///{tmp_path / 'serving.db'}",
            max_bars=6,
        )
        api = f"http://127.0.0.1:{settings.serving.api_port}"

        async def scenario() -> list[dict[str, Any]]:
            worker = asyncio.create_task(serve(settings))
            _status, body = await wait_for(not_ready_because(api, f"the model registry {late.url}"), 30, "not ready")
            assert any("Connection refused" in reason for reason in body["reasons"]), body
            await asyncio.sleep(2.0)  # a few checks, each after a longer delay
            assert not worker.done()
            await asyncio.to_thread(late.start)
            await wait_for(ready(api), 60, "ready once the tracking server answers")
            return await asyncio.wait_for(worker, 60)

        try:
            rows = asyncio.run(scenario())
        finally:
            late.stop()
    [delays] = retry_delays(caplog, f"the model registry {late.url} is unavailable")
    assert_growing_and_bounded(delays)
    assert any("dependencies reachable after" in r.getMessage() for r in caplog.records)
    assert rows[0]["model"] == "v1" and rows[0]["bars"] == 6 and rows[0]["orders"] == 1 and rows[0]["fills"] == 1
    assert len(assert_books(settings.serving.database_url)) == 6


def test_worker_waits_for_postgresql_and_survives_losing_it(
    postgres_admin_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="app.serve")
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    register_champion(tracking, tmp_path / "locks")
    with fresh_database(postgres_admin_url, "serving") as direct_url, running_exchange(speed=SPEED) as exchange:
        proxy = TcpProxy("127.0.0.1", make_url(direct_url).port or 5432)  # not listening yet: PostgreSQL is "down"
        url = make_url(direct_url).set(port=proxy.port).render_as_string(hide_password=False)
        settings = worker_settings(tmp_path, exchange.url, tracking_uri=tracking, database_url=url, max_bars=8)
        api = f"http://127.0.0.1:{settings.serving.api_port}"
        shown = make_url(url).render_as_string(hide_password=True)

        def logged(words: str) -> Callable[[], Any]:
            async def check() -> bool:
                return any(words in r.getMessage() for r in caplog.records)

            return check

        def decisions() -> int:
            engine = make_engine(direct_url)
            try:
                with session_factory(engine)() as session:
                    return len(session.scalars(select(Decision.id)).all())
            finally:
                engine.dispose()

        async def scenario() -> list[dict[str, Any]]:
            worker = asyncio.create_task(serve(settings))
            _status, body = await wait_for(not_ready_because(api, f"the serving database {shown}"), 30, "not ready")
            assert any("Connection refused" in reason for reason in body["reasons"]), body
            await asyncio.sleep(2.0)
            assert not worker.done()
            proxy.up()  # PostgreSQL is reachable
            await wait_for(ready(api), 60, "ready once PostgreSQL answers")

            async def traded() -> bool:
                return await asyncio.to_thread(decisions) >= 2

            await wait_for(traded, 30, "two decisions")
            proxy.down()  # PostgreSQL lost while trading: every connection cut, new ones refused
            await wait_for(logged("the serving database failed"), 30, "the worker to notice")
            await wait_for(not_ready_because(api, f"the serving database {shown}"), 30, "not ready again")
            await asyncio.sleep(1.5)  # candles close meanwhile: they must be decided once it is back
            assert not worker.done()
            proxy.up()
            await wait_for(ready(api), 60, "ready again")
            return await asyncio.wait_for(worker, 60)

        try:
            rows = asyncio.run(scenario())
        finally:
            proxy.close()
        candles = assert_books(direct_url)
    at_start, while_trading = retry_delays(caplog, f"the serving database {shown} is unavailable")
    assert_growing_and_bounded(at_start)
    assert while_trading and while_trading[0] == 0.2, while_trading
    assert any("the serving database failed (OperationalError" in r.getMessage() for r in caplog.records)
    assert rows[0]["model"] == "v1"
    assert len(candles) >= 8 + 2  # two before the loss, then max_bars after the restart (catching up first)
