"""CcxtBroker against the local exchange over HTTP: the balance view behind `holdings()` (it equals a fresh
fetch_balance after orders, with far fewer balance requests than orders) and `cancel_open_orders()` (the kill
switch's cancel: ours only, recorded through the order state machine, never crashing)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest
from sqlalchemy.orm import Session, sessionmaker

from cta.clock import Clock, ManualClock, SystemClock
from cta.config import ExchangeSettings, Secrets
from cta.exchange import ExchangeAdapter
from cta.exchange_server import LocalExchangeServer
from serving.ccxt_broker import CcxtBroker
from serving.client_ids import client_order_id
from serving.orders import OrderStatus
from serving.repository import fills_for, get_order
from serving.types import Holdings
from tests.exchange_fixtures import (
    EXCHANGE_API_KEY,
    EXCHANGE_API_SECRET,
    EXCHANGE_START_MS,
    running_exchange,
    sync_client,
)
from tests.serving.drill_driver import DRILL_MARKET, FAST_RETRY, order_request

PREFIX = "t1"
SYMBOL = DRILL_MARKET.symbol
ACCOUNT_PATH = "/api/v3/account"  # what fetch_balance requests
ORDER_PATH = "/api/v3/order"
HOUR_MS = 3_600_000
RICH = {"USDT": 100_000.0, "BTC": 1.0}
LIMIT_PRICE = 31_700.0  # below the 31801.05 open at EXCHANGE_START; the hour's low (31688.01) trades through it
T = TypeVar("T")


def run_broker(
    server: LocalExchangeServer,
    sessions: sessionmaker[Session],
    scenario: Callable[[CcxtBroker, ExchangeAdapter], Awaitable[T]],
    *,
    clock: Clock | None = None,
    **options: Any,
) -> T:
    """Run `scenario` on a started broker (real adapter, no client-side throttling to speak of)."""

    async def run() -> T:
        venue = ExchangeAdapter(
            ExchangeSettings(id="binance", api_url=server.url, rate_limit_share=100, timeout_ms=2_000),
            Secrets.model_validate({"api_key": EXCHANGE_API_KEY, "api_secret": EXCHANGE_API_SECRET}),
            retry=FAST_RETRY,
        )
        broker = CcxtBroker(
            venue,
            sessions,
            PREFIX,
            clock or SystemClock(),
            (DRILL_MARKET,),
            recv_window_ms=500,
            clock_margin_ms=250,
            **options,
        )
        try:
            await broker.start()
            return await scenario(broker, venue)
        finally:
            await broker.close()

    return asyncio.run(run())


def fresh_holdings(server: LocalExchangeServer) -> Holdings:
    """Free BTC and USDT as a fresh fetch_balance reports them (call after counting the broker's requests)."""
    balance = sync_client(server.url).fetch_balance()
    return Holdings(units=float(balance["BTC"]["free"]), cash=float(balance["USDT"]["free"]))


def balance_fetches(server: LocalExchangeServer) -> int:
    return server.request_count(ACCOUNT_PATH, "GET")


def assert_same(held: Holdings, fresh: Holdings) -> None:
    assert held.units == pytest.approx(fresh.units, rel=1e-9, abs=1e-12)
    assert held.cash == pytest.approx(fresh.cash, rel=1e-9)


# ----- the balance view ------------------------------------------------------------------------------------------


def test_holdings_track_the_fills_without_a_balance_fetch_per_order(worker_db: sessionmaker[Session]) -> None:
    """Ten orders at moving prices, `holdings()` before and after each (as the worker asks), a reconciliation in the
    middle: the view equals a fresh fetch_balance, and the only balance request is the one start() made."""
    with running_exchange(initial_balances=RICH) as server:

        async def scenario(broker: CcxtBroker, venue: ExchangeAdapter) -> tuple[list[Holdings], Holdings, int]:
            seen = []
            for i in range(10):
                server.clock.set(EXCHANGE_START_MS + i * HOUR_MS)  # a new price for each order
                seen.append(await broker.holdings(DRILL_MARKET))
                outcome = await broker.submit(order_request(i, 0, 0.01 + 0.001 * i))
                assert outcome.status is OrderStatus.FILLED
                if i == 4:
                    report = await broker.reconcile()  # in sync: its balance becomes the view
                    assert not report.changed
            return seen, await broker.holdings(DRILL_MARKET), balance_fetches(server)

        seen, final, fetches = run_broker(server, worker_db, scenario)

        assert fetches == 2  # start()'s reconciliation and the one in the middle; none for 21 holdings, 10 orders
        assert_same(final, fresh_holdings(server))
        assert seen[0] == Holdings(units=1.0, cash=100_000.0)
        assert final.units == pytest.approx(1.0 + 0.070 - 0.075 - 0.00007, abs=1e-9)  # buys - sells - fees (BTC)


def test_the_view_is_fetched_again_once_older_than_the_max_age(worker_db: sessionmaker[Session]) -> None:
    """A trade the broker did not make (another client on the account) shows only once the view has aged out."""
    clock = ManualClock(SystemClock().now_ms())
    with running_exchange(initial_balances=RICH) as server:

        async def scenario(broker: CcxtBroker, venue: ExchangeAdapter) -> tuple[Holdings, Holdings, Holdings, int]:
            before = await broker.holdings(DRILL_MARKET)
            sync_client(server.url).create_order(SYMBOL, "market", "buy", 0.5)  # not ours
            clock.advance(29_000)
            stale = await broker.holdings(DRILL_MARKET)
            fetches = balance_fetches(server)
            clock.advance(1_000)
            return before, stale, await broker.holdings(DRILL_MARKET), fetches

        before, stale, after, fetches_while_young = run_broker(
            server, worker_db, scenario, clock=clock, balance_max_age_s=30.0
        )

        assert fetches_while_young == 1 and balance_fetches(server) == 2
        assert stale == before == Holdings(units=1.0, cash=100_000.0)
        assert_same(after, fresh_holdings(server))
        assert after.units > 1.49


@pytest.mark.parametrize("case", ["rejected", "answer_dropped"])
def test_an_order_without_a_clean_answer_makes_the_next_holdings_ask_the_exchange(
    worker_db: sessionmaker[Session], case: str
) -> None:
    with running_exchange(initial_balances=RICH) as server:

        async def scenario(broker: CcxtBroker, venue: ExchangeAdapter) -> tuple[OrderStatus, int, Holdings]:
            await broker.holdings(DRILL_MARKET)
            if case == "answer_dropped":
                server.inject_fault("drop_after_execute", ORDER_PATH, method="POST")
            amount = 100.0 if case == "rejected" else 0.01  # 100 BTC is ~3.2M USDT: insufficient funds
            outcome = await broker.submit(order_request(0, 0, amount))
            fetches = balance_fetches(server)
            return outcome.status, fetches, await broker.holdings(DRILL_MARKET)

        status, fetches_before, held = run_broker(server, worker_db, scenario)

        assert status is (OrderStatus.REJECTED if case == "rejected" else OrderStatus.FILLED)
        assert balance_fetches(server) == fetches_before + 1
        assert_same(held, fresh_holdings(server))


def test_a_reconciliation_that_adopts_a_fill_drops_the_view(worker_db: sessionmaker[Session]) -> None:
    """An order with our prefix placed behind the broker's back: reconciliation adopts it, and the balance it fetched
    (which may predate such fills) is not trusted: the next holdings() fetches it again."""
    with running_exchange(initial_balances=RICH) as server:

        async def scenario(broker: CcxtBroker, venue: ExchangeAdapter) -> tuple[list[str], int, Holdings]:
            cid = client_order_id(PREFIX, str(DRILL_MARKET), EXCHANGE_START_MS, 7)
            sync_client(server.url).create_order(SYMBOL, "market", "buy", 0.02, None, {"newClientOrderId": cid})
            report = await broker.reconcile()
            fetches = balance_fetches(server)
            return report.adopted_orders, fetches, await broker.holdings(DRILL_MARKET)

        adopted, fetches_before, held = run_broker(server, worker_db, scenario)

        assert len(adopted) == 1
        assert balance_fetches(server) == fetches_before + 1
        assert_same(held, fresh_holdings(server))


# ----- cancel_open_orders ----------------------------------------------------------------------------------------


def place_resting_orders(server: LocalExchangeServer) -> tuple[str, list[str]]:
    """A resting limit buy of ours and two foreign resting orders (one whose id merely starts with our prefix), placed
    directly on the exchange before the broker starts: start()'s reconciliation adopts ours as OPEN."""
    client = sync_client(server.url)
    ours = client_order_id(PREFIX, str(DRILL_MARKET), EXCHANGE_START_MS, 3)
    client.create_order(SYMBOL, "limit", "buy", 0.01, LIMIT_PRICE, {"newClientOrderId": ours})
    foreign = ["manual-1", f"{PREFIX}2-foreign"]
    client.create_order(SYMBOL, "limit", "buy", 0.01, 20_000.0, {"newClientOrderId": foreign[0]})
    client.create_order(SYMBOL, "limit", "sell", 0.01, 50_000.0, {"newClientOrderId": foreign[1]})
    return ours, foreign


def open_client_ids(server: LocalExchangeServer) -> list[str]:
    return sorted(o["clientOrderId"] for o in sync_client(server.url).fetch_open_orders(SYMBOL))


def test_cancel_open_orders_cancels_ours_only_and_keeps_its_partial_fill(worker_db: sessionmaker[Session]) -> None:
    # a resting order fills at most 1e-6 of a candle's volume per candle: 0.00223 BTC of the first hour's 2237
    with running_exchange(initial_balances=RICH, fill_participation=1e-6) as server:
        ours, foreign = place_resting_orders(server)

        async def scenario(broker: CcxtBroker, venue: ExchangeAdapter) -> list[str]:
            with worker_db() as session:  # start() adopted it: the row is OPEN before the kill switch
                row = get_order(session, ours)
                assert row is not None and row.status == OrderStatus.OPEN and row.filled == 0
            server.clock.set(EXCHANGE_START_MS + HOUR_MS)  # the first hour trades through our price: a partial fill
            return await broker.cancel_open_orders()

        cancelled = run_broker(server, worker_db, scenario)

        assert cancelled == [ours]
        assert open_client_ids(server) == sorted(foreign)
        at_exchange = sync_client(server.url).fetch_order(None, SYMBOL, {"origClientOrderId": ours})
        assert at_exchange["status"] == "canceled" and at_exchange["filled"] == pytest.approx(0.00223)
        with worker_db() as session:
            row = get_order(session, ours)
            assert row is not None and row.status == OrderStatus.CANCELLED
            assert row.filled == pytest.approx(0.00223)
            assert sum(f.amount for f in fills_for(session, row)) == pytest.approx(0.00223)
            assert all(get_order(session, cid) is None for cid in foreign)


def test_cancel_open_orders_survives_a_failing_exchange_and_cancels_on_the_next_call(
    worker_db: sessionmaker[Session],
) -> None:
    with running_exchange(initial_balances=RICH) as server:
        ours, foreign = place_resting_orders(server)

        async def scenario(broker: CcxtBroker, venue: ExchangeAdapter) -> tuple[list[str], str, list[str]]:
            server.inject_fault("error", ORDER_PATH, method="DELETE", count=100)  # every cancel answers 5xx
            first = await broker.cancel_open_orders()
            with worker_db() as session:
                row = get_order(session, ours)
                assert row is not None
                status_after_failure = row.status
            server.clear_faults()
            return first, status_after_failure, await broker.cancel_open_orders()

        first, status_after_failure, second = run_broker(server, worker_db, scenario)

        assert first == [] and status_after_failure == OrderStatus.OPEN
        assert second == [ours]
        assert open_client_ids(server) == sorted(foreign)
        with worker_db() as session:
            row = get_order(session, ours)
            assert row is not None and row.status == OrderStatus.CANCELLED


def test_an_order_that_filled_before_the_cancel_arrived_is_recorded_filled(worker_db: sessionmaker[Session]) -> None:
    """The order is open when listed and filled when the cancel reaches the exchange ("unknown order"): the broker
    looks it up and records the fill, and does not report it as cancelled."""
    with running_exchange(initial_balances=RICH) as server:
        ours, foreign = place_resting_orders(server)

        async def scenario(broker: CcxtBroker, venue: ExchangeAdapter) -> list[str]:
            cancel = venue.client.cancel_order

            async def fill_first(*args: Any, **kwargs: Any) -> Any:
                server.clock.set(EXCHANGE_START_MS + HOUR_MS)  # the hour trades through our price: it fills in full
                return await cancel(*args, **kwargs)

            venue.client.cancel_order = fill_first
            return await broker.cancel_open_orders()

        cancelled = run_broker(server, worker_db, scenario)

        assert cancelled == []
        assert open_client_ids(server) == sorted(foreign)
        with worker_db() as session:
            row = get_order(session, ours)
            assert row is not None and row.status == OrderStatus.FILLED
            assert sum(f.amount for f in fills_for(session, row)) == pytest.approx(0.01)
