"""The HTTP API over a real server on 127.0.0.1 (port 0) with a real aiohttp client: auth, views, kill switch."""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from serving.api import NO_TOKEN_MESSAGE, ApiServer, build_app
from serving.client_ids import client_order_id
from serving.control import TradingState, set_trading_state, trading_state
from serving.ledger import verify
from serving.metrics import WorkerMetrics
from serving.models import EquitySnapshot, LedgerEntry
from serving.orders import OrderStatus
from serving.repository import apply_exchange_update, record_intent, upsert_position
from tests.serving.conftest import Database

pytestmark = pytest.mark.integration

TOKEN = "s3cr3t-test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
BTC = "binance:BTC/USDT:1h"
ETH = "binance:ETH/USDT:1h"
T0 = 1_700_000_000_000  # 2023-11-14T22:13:20Z
H = 3_600_000
PROTECTED = [
    ("GET", "/metrics"),
    ("GET", "/api/positions"),
    ("GET", "/api/orders"),
    ("GET", "/api/equity"),
    ("GET", "/api/champion"),
    ("GET", "/api/state"),
    ("POST", "/api/kill-switch"),
    ("GET", "/api/no-such-route"),
]
KILL = {"state": "HALTED", "reason": "operator: exchange incident", "cancel_open": True}


def ready_status() -> dict[str, Any]:
    return {"ready": True, "models": {BTC: {"name": "cta-btc", "version": "7", "alias": "champion"}}}


@asynccontextmanager
async def serving(app: web.Application) -> AsyncIterator[tuple[str, aiohttp.ClientSession]]:
    """The app on a free port of 127.0.0.1 and a client session; both closed afterwards."""
    server = ApiServer(app)
    url = await server.start("127.0.0.1", 0)
    try:
        async with aiohttp.ClientSession(base_url=url) as client:
            yield url, client
    finally:
        await server.stop()


def app_for(
    readers: sessionmaker[Session],
    *,
    token: str | None = TOKEN,
    metrics: WorkerMetrics | None = None,
    status: Callable[[], Mapping[str, Any]] = ready_status,
    on_trading_state: Callable[[TradingState, str, bool], Awaitable[None]] | None = None,
) -> web.Application:
    return build_app(
        sessions=readers,
        metrics=metrics or WorkerMetrics(),
        status=status,
        token=token,
        on_trading_state=on_trading_state,
    )


def run(scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(scenario())


# ----- open routes ----------------------------------------------------------------------------------------


def test_health_and_readiness_need_no_token(readers: sessionmaker[Session]) -> None:
    states: list[Mapping[str, Any]] = [
        {"ready": True},
        {"ready": False, "reasons": ["no champion for binance:BTC/USDT:1h", "broker not reconciled"]},
    ]

    def status() -> Mapping[str, Any]:
        return states[0]

    async def scenario() -> None:
        async with serving(app_for(readers, status=status)) as (url, client):
            assert url.startswith("http://127.0.0.1:") and not url.endswith(":0")
            async with client.get("/healthz") as response:
                assert (response.status, await response.json()) == (200, {"status": "ok"})
            async with client.get("/readyz") as response:
                assert (response.status, await response.json()) == (200, {"status": "ready"})
            states.pop(0)
            async with client.get("/readyz") as response:
                assert response.status == 503
                assert await response.json() == {
                    "status": "not ready",
                    "reasons": ["no champion for binance:BTC/USDT:1h", "broker not reconciled"],
                }

    run(scenario)


def test_readiness_is_503_when_the_status_callback_fails(readers: sessionmaker[Session]) -> None:
    def broken() -> Mapping[str, Any]:
        raise RuntimeError("worker not started")

    async def scenario() -> None:
        async with serving(app_for(readers, status=broken)) as (_url, client):
            async with client.get("/readyz") as response:
                assert (response.status, await response.json()) == (
                    503,
                    {"status": "not ready", "reasons": ["status unavailable"]},
                )
            async with client.get("/healthz") as response:
                assert response.status == 200

    run(scenario)


# ----- authentication -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-token"},
        {"Authorization": TOKEN},
        {"Authorization": f"bearer {TOKEN}"},
        {"Authorization": f"Bearer {TOKEN}x"},
        {"Authorization": f"Basic {TOKEN}"},
    ],
    ids=["missing", "wrong", "no-scheme", "lowercase-scheme", "longer", "basic"],
)
def test_protected_routes_refuse_a_wrong_or_missing_token(
    readers: sessionmaker[Session], headers: dict[str, str]
) -> None:
    async def scenario() -> None:
        async with serving(app_for(readers)) as (_url, client):
            for method, path in PROTECTED:
                async with client.request(method, path, headers=headers, json=KILL) as response:
                    assert response.status == 401, (method, path)
                    assert await response.json() == {"error": "unauthorized"}

    run(scenario)
    assert trading_state(readers).state == TradingState.RUNNING  # the refused kill switch changed nothing


def test_without_a_configured_token_protected_routes_answer_503(readers: sessionmaker[Session]) -> None:
    async def scenario() -> None:
        async with serving(app_for(readers, token=None)) as (_url, client):
            for method, path in PROTECTED:
                for headers in ({}, {"Authorization": "Bearer "}, {"Authorization": "Bearer None"}):
                    async with client.request(method, path, headers=headers, json=KILL) as response:
                        assert response.status == 503, (method, path)
                        assert await response.json() == {"error": NO_TOKEN_MESSAGE}
            async with client.get("/healthz") as response:
                assert response.status == 200

    run(scenario)


def test_the_token_is_never_logged(readers: sessionmaker[Session], caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        async with serving(app_for(readers)) as (_url, client):
            for headers in (AUTH, {"Authorization": f"Bearer {TOKEN}-wrong"}):
                for method, path in PROTECTED:
                    async with client.request(method, path, headers=headers, json=KILL) as response:
                        await response.read()

    with caplog.at_level(logging.DEBUG), caplog.at_level(logging.DEBUG, logger="aiohttp.access"):
        run(scenario)
    assert "/api/kill-switch" in caplog.text  # the access log did record the requests
    assert TOKEN not in caplog.text
    assert "Authorization" not in caplog.text


# ----- kill switch ----------------------------------------------------------------------------------------


def test_kill_switch_persists_notifies_and_is_in_the_ledger(
    readers: sessionmaker[Session], reopen: Callable[..., sessionmaker[Session]]
) -> None:
    metrics = WorkerMetrics()
    calls: list[tuple[TradingState, str, bool]] = []

    async def on_trading_state(state: TradingState, reason: str, cancel_open: bool) -> None:
        calls.append((state, reason, cancel_open))

    async def scenario() -> None:
        app = app_for(readers, metrics=metrics, on_trading_state=on_trading_state)
        async with serving(app) as (_url, client):
            async with client.post("/api/kill-switch", headers=AUTH, json=KILL) as response:
                assert response.status == 200
                body = await response.json()
            assert {k: body[k] for k in ("state", "reason", "cancel_open", "updated_by", "worker_notified")} == {
                "state": "HALTED",
                "reason": "operator: exchange incident",
                "cancel_open": True,
                "updated_by": "api",
                "worker_notified": True,
            }
            assert datetime.fromisoformat(body["updated_at"]).utcoffset() is not None
            async with client.get("/api/state", headers=AUTH) as response:
                state = await response.json()
            assert state == {k: body[k] for k in ("state", "reason", "cancel_open", "updated_at", "updated_by")}
            async with client.post(
                "/api/kill-switch", headers=AUTH, json={"state": "reducing", "reason": "easing back"}
            ) as response:
                assert (response.status, (await response.json())["state"]) == (200, "REDUCING")

    run(scenario)
    assert calls == [
        (TradingState.HALTED, "operator: exchange incident", True),
        (TradingState.REDUCING, "easing back", False),
    ]
    assert "cta_trading_state 1.0" in metrics.render().decode()
    restarted = reopen(read_only=True)  # a new engine on the same database: a restarted worker
    snapshot = trading_state(restarted)
    assert (snapshot.state, snapshot.reason, snapshot.cancel_open) == (TradingState.REDUCING, "easing back", False)
    with restarted() as session:
        assert verify(session).ok
        payloads = [json.loads(p) for p in session.scalars(select(LedgerEntry.payload).order_by(LedgerEntry.seq))]
    assert [(p["state"], p["cancel_open"], p["by"]) for p in payloads] == [
        ("HALTED", True, "api"),
        ("REDUCING", False, "api"),
    ]


def test_kill_switch_is_persisted_even_when_the_worker_callback_fails(
    readers: sessionmaker[Session], sessions: sessionmaker[Session]
) -> None:
    async def failing(_state: TradingState, _reason: str, _cancel_open: bool) -> None:
        raise RuntimeError("worker loop closed")

    async def scenario() -> None:
        app = build_app(
            sessions=readers,
            metrics=WorkerMetrics(),
            status=ready_status,
            token=TOKEN,
            on_trading_state=failing,
            control_sessions=sessions,
        )
        async with serving(app) as (_url, client), client.post("/api/kill-switch", headers=AUTH, json=KILL) as response:
            assert response.status == 200
            assert (await response.json())["worker_notified"] is False

    run(scenario)
    assert trading_state(readers).state == TradingState.HALTED


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"state": "PAUSED", "reason": "x"}, "state must be one of RUNNING, REDUCING, HALTED"),
        ({"state": "HALTED"}, "reason must be a non-empty string"),
        ({"state": "HALTED", "reason": "   "}, "reason must be a non-empty string"),
        ({"state": "HALTED", "reason": "x" * 1001}, "at most 1000 characters"),
        ({"state": "HALTED", "reason": "x", "cancel_open": "yes"}, "cancel_open must be true or false"),
        (["HALTED"], "body must be a JSON object"),
        ("not json", "body must be JSON"),
    ],
)
def test_kill_switch_refuses_malformed_bodies(readers: sessionmaker[Session], body: Any, fragment: str) -> None:
    async def scenario() -> None:
        async with serving(app_for(readers)) as (_url, client):
            kwargs: dict[str, Any] = {"data": body} if isinstance(body, str) else {"json": body}
            async with client.post("/api/kill-switch", headers=AUTH, **kwargs) as response:
                assert response.status == 400
                assert fragment in (await response.json())["error"]

    run(scenario)
    assert trading_state(readers).state == TradingState.RUNNING


# ----- metrics --------------------------------------------------------------------------------------------


def test_metrics_endpoint_renders_the_worker_metrics(readers: sessionmaker[Session]) -> None:
    metrics = WorkerMetrics()
    metrics.decision(BTC, 0.002)
    metrics.decision(BTC, 0.0004)
    metrics.order(BTC, OrderStatus.FILLED)
    metrics.error("exchange")
    metrics.model(BTC, "7")
    metrics.state(TradingState.HALTED)
    metrics.equity(BTC, 10_250.5)

    async def scenario() -> None:
        async with (
            serving(app_for(readers, metrics=metrics)) as (_url, client),
            client.get("/metrics", headers=AUTH) as response,
        ):
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/plain")
            text = await response.text()
        for line in (
            f'cta_decisions_total{{market="{BTC}"}} 2.0',
            f'cta_orders_total{{market="{BTC}",status="FILLED"}} 1.0',
            'cta_errors_total{kind="exchange"} 1.0',
            f'cta_decision_latency_seconds_bucket{{le="0.0005",market="{BTC}"}} 1.0',
            f'cta_decision_latency_seconds_bucket{{le="0.0025",market="{BTC}"}} 2.0',
            f'cta_decision_latency_seconds_count{{market="{BTC}"}} 2.0',
            f'cta_model_version{{market="{BTC}"}} 7.0',
            "cta_trading_state 2.0",
            f'cta_equity{{market="{BTC}"}} 10250.5',
        ):
            assert line in text.splitlines(), line

    run(scenario)


def test_worker_metrics_have_their_own_registry() -> None:
    first, second = WorkerMetrics(), WorkerMetrics()
    first.error("model")
    assert 'cta_errors_total{kind="model"} 1.0' in first.render().decode()
    assert "cta_errors_total{" not in second.render().decode()
    assert "python_gc" not in first.render().decode()  # no global/process collectors
    second.model(ETH, "not-a-number")
    value = next(
        line.split()[-1] for line in second.render().decode().splitlines() if line.startswith("cta_model_version{")
    )
    assert math.isnan(float(value))
    for state, code in ((TradingState.RUNNING, 0), (TradingState.REDUCING, 1), ("HALTED", 2)):
        second.state(state)
        assert f"cta_trading_state {float(code)}" in second.render().decode()


# ----- read-only views ------------------------------------------------------------------------------------


def seed(sessions: sessionmaker[Session]) -> None:
    """Two positions, three orders (one filled, one open, one rejected) and four equity snapshots."""
    updated = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    with sessions.begin() as session:
        upsert_position(session, BTC, units=0.5, average_price=42_000.0, realized_pnl=12.5, now=updated)
        upsert_position(session, ETH, units=0, average_price=None, realized_pnl=-3, now=updated)
        for seq, (status, filled) in enumerate(
            [(OrderStatus.FILLED, 0.5), (OrderStatus.OPEN, 0.0), (OrderStatus.REJECTED, 0.0)]
        ):
            order = record_intent(
                session,
                client_order_id=client_order_id("cta", BTC, T0, seq),
                market=BTC,
                symbol="BTC/USDT",
                side="buy",
                order_type="market",
                amount=0.5,
                candle_ts=T0,
            )
            apply_exchange_update(
                session, order, status=status, filled=filled, average_price=42_000.0 if filled else None
            )
        for i in range(4):
            session.add(
                EquitySnapshot(ts=T0 + i * H, market=None, cash=1_000.0 + i, position_value=0, equity=1_000 + i)
            )


def test_positions_orders_and_equity_shapes(readers: sessionmaker[Session], sessions: sessionmaker[Session]) -> None:
    seed(sessions)

    async def get(client: aiohttp.ClientSession, path: str, status: int = 200) -> Any:
        async with client.get(path, headers=AUTH) as response:
            assert response.status == status, await response.text()
            return await response.json()

    async def scenario() -> None:
        async with serving(app_for(readers)) as (_url, client):
            positions = (await get(client, "/api/positions"))["positions"]
            assert positions == [
                {
                    "market": BTC,
                    "units": 0.5,
                    "average_price": 42_000.0,
                    "realized_pnl": 12.5,
                    "updated_at": "2024-01-02T03:04:05+00:00",
                },
                {
                    "market": ETH,
                    "units": 0.0,
                    "average_price": None,
                    "realized_pnl": -3.0,
                    "updated_at": "2024-01-02T03:04:05+00:00",
                },
            ]
            assert all(isinstance(p["units"], float) and isinstance(p["realized_pnl"], float) for p in positions)

            orders = (await get(client, "/api/orders"))["orders"]
            assert [o["status"] for o in orders] == ["REJECTED", "OPEN", "FILLED"]  # newest first
            filled = orders[2]
            assert filled["client_order_id"] == client_order_id("cta", BTC, T0, 0)
            assert (filled["amount"], filled["filled"], filled["average_price"]) == (0.5, 0.5, 42_000.0)
            assert filled["candle_time"] == "2023-11-14T22:13:20+00:00"
            assert datetime.fromisoformat(filled["created_at"]).utcoffset() is not None
            assert set(filled) >= {"market", "symbol", "side", "type", "fee_cost", "limit_price", "updated_at"}
            limited = (await get(client, "/api/orders?limit=1"))["orders"]
            assert [o["status"] for o in limited] == ["REJECTED"]
            live = (await get(client, "/api/orders?status=open,FILLED"))["orders"]
            assert [o["status"] for o in live] == ["OPEN", "FILLED"]
            assert (await get(client, f"/api/orders?market={ETH}"))["orders"] == []
            bad = await get(client, "/api/orders?status=DONE", status=400)
            assert "unknown status DONE" in bad["error"]
            await get(client, "/api/orders?limit=0", status=400)
            await get(client, "/api/orders?limit=ten", status=400)

            equity = (await get(client, "/api/equity?limit=2"))["equity"]
            assert equity == [  # the newest two, oldest first
                {
                    "time": "2023-11-15T00:13:20+00:00",
                    "market": None,
                    "cash": 1_002.0,
                    "position_value": 0.0,
                    "equity": 1_002.0,
                },
                {
                    "time": "2023-11-15T01:13:20+00:00",
                    "market": None,
                    "cash": 1_003.0,
                    "position_value": 0.0,
                    "equity": 1_003.0,
                },
            ]
            assert len((await get(client, "/api/equity"))["equity"]) == 4
            await get(client, "/api/equity?limit=100000", status=400)

            champion = await get(client, "/api/champion")
            assert champion == {"models": {BTC: {"name": "cta-btc", "version": "7", "alias": "champion"}}}

    run(scenario)


def test_state_reads_the_persisted_switch(readers: sessionmaker[Session], sessions: sessionmaker[Session]) -> None:
    set_trading_state(sessions, TradingState.REDUCING, "manual", "ops", cancel_open=True)

    async def scenario() -> None:
        async with serving(app_for(readers)) as (_url, client), client.get("/api/state", headers=AUTH) as response:
            body = await response.json()
        assert (body["state"], body["reason"], body["cancel_open"], body["updated_by"]) == (
            "REDUCING",
            "manual",
            True,
            "ops",
        )

    run(scenario)


def test_database_errors_answer_503(database: Database) -> None:
    from serving.db import session_factory

    unmigrated = session_factory(database.new_engine(), read_only=True)
    metrics = WorkerMetrics()

    async def scenario() -> None:
        async with (
            serving(app_for(unmigrated, metrics=metrics)) as (_url, client),
            client.get("/api/positions", headers=AUTH) as response,
        ):
            assert (response.status, await response.json()) == (503, {"error": "database unavailable"})

    run(scenario)
    assert 'cta_errors_total{kind="api_database"} 1.0' in metrics.render().decode()


def test_server_start_twice_and_stop_twice(readers: sessionmaker[Session]) -> None:
    async def scenario() -> None:
        server = ApiServer(app_for(readers))
        url = await server.start("127.0.0.1", 0)
        with pytest.raises(RuntimeError, match="already started"):
            await server.start("127.0.0.1", 0)
        await server.stop()
        await server.stop()
        with pytest.raises(aiohttp.ClientConnectionError):
            async with aiohttp.ClientSession() as client, client.get(url + "/healthz"):
                pass

    run(scenario)
