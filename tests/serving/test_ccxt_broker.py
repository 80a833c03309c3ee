"""CcxtBroker against the local exchange over HTTP (real ccxt, real adapter, SQLite in tmp_path): clean fills,
rejections, lost answers, timeouts and a faulty period, counting the orders the exchange actually received."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import ccxt
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from cta.exchange_server import LocalExchangeServer
from cta.exchange_server.settings import FaultSettings
from cta.lake import Market
from serving import ledger
from serving.ccxt_broker import CcxtBroker
from serving.exchange_reports import is_definite_rejection
from serving.models import LedgerEntry, Order
from serving.orders import OrderStatus
from serving.repository import OrderConflict, fills_for, get_order, get_position
from serving.types import CrashPoint, Holdings, OrderOutcome, OrderRequest
from tests.exchange_fixtures import EXCHANGE_START_MS, running_exchange, sync_client
from tests.serving.drill_driver import DRILL_MARKET, build_broker, compare_books, order_request, settle

PREFIX = "t1"
ORDER_PATH = "/api/v3/order"
RECV_WINDOW_MS = 500
MARGIN_MS = 250
T = TypeVar("T")


def with_broker(
    server: LocalExchangeServer,
    sessions: sessionmaker[Session],
    scenario: Callable[[CcxtBroker], Awaitable[T]],
    **options: Any,
) -> T:
    """Run `scenario` on a started broker (the default checkpoint unless `options` pass one)."""

    async def run() -> T:
        windows = {"recv_window_ms": RECV_WINDOW_MS, "clock_margin_ms": MARGIN_MS}
        broker = build_broker(server.url, sessions, PREFIX, **(windows | options))
        try:
            await broker.start()
            return await scenario(broker)
        finally:
            await broker.close()

    return asyncio.run(run())


def submit_one(
    server: LocalExchangeServer, sessions: sessionmaker[Session], request: OrderRequest, **options: Any
) -> OrderOutcome:
    async def scenario(broker: CcxtBroker) -> OrderOutcome:
        return await broker.submit(request)

    return with_broker(server, sessions, scenario, **options)


def exchange_view(server: LocalExchangeServer) -> tuple[list[dict[str, Any]], list[dict[str, Any]], float]:
    """Orders, trades and the BTC total as ccxt reads them from the exchange."""
    client = sync_client(server.url)
    orders = client.fetch_orders("BTC/USDT", None, 1000)
    trades = client.fetch_my_trades("BTC/USDT", None, 1000)
    balance = client.fetch_balance()
    return orders, trades, float((balance.get("BTC") or {}).get("total") or 0.0)


def ledger_events(sessions: sessionmaker[Session], cid: str) -> list[str]:
    """The "order" ledger events of one order, oldest first."""
    with sessions() as session:
        rows = session.scalars(select(LedgerEntry.payload).where(LedgerEntry.kind == "order").order_by(LedgerEntry.seq))
        payloads = [json.loads(row) for row in rows]
    return [p["event"] for p in payloads if p["client_order_id"] == cid]


def buy(amount: float) -> OrderRequest:
    """Order 0 of the drill sequence: a buy."""
    return order_request(0, 0, amount)


def stored(session: Session, client_id: str) -> Order:
    """The row of `client_id`, which the test knows exists."""
    order = get_order(session, client_id)
    assert order is not None, client_id
    return order


# ----- pure --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "definite"),
    [
        (ccxt.InsufficientFunds("binance Account has insufficient balance"), True),
        (ccxt.InvalidOrder("binance Filter failure: LOT_SIZE"), True),
        (ccxt.BadRequest("binance bad request"), True),
        (ccxt.AuthenticationError("binance bad key"), True),
        (ccxt.InvalidOrder('binance {"code":-2010,"msg":"Duplicate order sent."}'), False),
        (ccxt.DuplicateOrderId("duplicate"), False),
        (ccxt.RequestTimeout("timed out"), False),
        (ccxt.NetworkError("connection reset"), False),
        (ccxt.ExchangeNotAvailable("503"), False),
        (ccxt.OperationFailed("-1001 internal error"), False),
        (ccxt.InvalidNonce("outside recvWindow"), False),
        (RuntimeError("anything else"), False),
    ],
)
def test_only_an_answer_that_refuses_the_order_is_a_definite_rejection(error: Exception, definite: bool) -> None:
    assert is_definite_rejection(error) is definite


def test_broker_refuses_two_markets_on_one_base_asset(worker_db: sessionmaker[Session]) -> None:
    four_hours = Market("binance", "BTC/USDT", "4h")
    with pytest.raises(ValueError, match="base asset"):
        build_broker("http://127.0.0.1:9", worker_db, PREFIX, markets=(DRILL_MARKET, four_hours))


# ----- clean path and rejections -------------------------------------------------------------------------------------


def test_submit_fills_records_fills_position_and_ledger(
    exchange_server: LocalExchangeServer, worker_db: sessionmaker[Session]
) -> None:
    request = buy(0.01)

    async def scenario(broker: CcxtBroker) -> tuple[OrderOutcome, OrderOutcome, OrderOutcome, Holdings]:
        first = await broker.submit(request)
        again = await broker.submit(request)
        sold = await broker.submit(order_request(1, 0, 0.005))
        return first, again, sold, await broker.holdings(DRILL_MARKET)

    first, again, sold, holdings = with_broker(exchange_server, worker_db, scenario)

    assert first.status is OrderStatus.FILLED and first.filled == pytest.approx(0.01)
    assert again == first  # the same request again is answered from the database, not sent
    assert first.sent_at is not None and again.sent_at is None
    assert sold.status is OrderStatus.FILLED
    assert exchange_server.request_count(ORDER_PATH, "POST") == 2
    orders, trades, btc = exchange_view(exchange_server)
    assert sorted(o["clientOrderId"] for o in orders) == sorted([first.client_order_id, sold.client_order_id])
    with worker_db() as session:
        row = get_order(session, first.client_order_id)
        assert row is not None and row.exchange_order_id == first.exchange_order_id
        assert [(f.amount, f.fee_currency) for f in fills_for(session, row)] == [(pytest.approx(0.01), "BTC")]
        position = get_position(session, str(DRILL_MARKET))
        assert position is not None
        assert position.units == pytest.approx(btc) and btc == pytest.approx(0.01 - 0.00001 - 0.005)
        assert holdings.units == pytest.approx(btc) and 0 < holdings.cash < 10_000
        assert position.realized_pnl < 0  # same price both ways (frozen clock): the fees
        assert ledger.verify(session).ok
    assert ledger_events(worker_db, first.client_order_id) == ["intent", "exchange_state", "exchange_state"]
    assert compare_books(worker_db, PREFIX, orders, trades, btc).problems == []


def test_the_checkpoint_is_called_at_each_crash_point_of_an_order_and_nothing_reads_the_environment(
    exchange_server: LocalExchangeServer, worker_db: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The crash drills' hook: called with the order at before_send, after_send, after_ack and during_fill, in that
    order, and only there. The old drill variable does nothing any more (the product never kills itself)."""
    monkeypatch.setenv("CTA_DRILL_CRASH_AT", "before_send")
    calls: list[tuple[CrashPoint, OrderRequest | None]] = []
    request = buy(0.01)

    outcome = submit_one(exchange_server, worker_db, request, checkpoint=lambda *call: calls.append(call))
    assert outcome.status is OrderStatus.FILLED
    assert [point for point, _ in calls] == [
        CrashPoint.BEFORE_SEND,
        CrashPoint.AFTER_SEND,
        CrashPoint.AFTER_ACK,
        CrashPoint.DURING_FILL,
    ]
    assert all(seen is request for _, seen in calls)


def test_an_order_is_sent_when_its_request_leaves_not_when_the_answer_is_back(
    exchange_server: LocalExchangeServer, worker_db: sessionmaker[Session]
) -> None:
    """`sent_at` (where the worker's decision latency ends) comes after the committed intent and before the venue's
    round trip: with 150 ms added to every request, the answer is recorded at least 150 ms after it."""

    async def scenario(broker: CcxtBroker) -> tuple[float, OrderOutcome, float]:
        exchange_server.set_random_faults(FaultSettings(latency_ms=150))
        try:
            before = time.perf_counter()
            outcome = await broker.submit(buy(0.01))
            return before, outcome, time.perf_counter()
        finally:
            exchange_server.set_random_faults(FaultSettings())

    before, outcome, after = with_broker(exchange_server, worker_db, scenario)
    assert outcome.status is OrderStatus.FILLED and outcome.sent_at is not None
    assert before < outcome.sent_at < before + 0.15  # the intent's commit only: no request before it
    assert after - outcome.sent_at >= 0.15  # the round trip and the recording come after it
    with worker_db() as session:
        order = get_order(session, outcome.client_order_id)
        assert order is not None and order.status == OrderStatus.FILLED.value


def test_a_different_order_under_a_used_client_id_is_refused_before_sending(
    exchange_server: LocalExchangeServer, worker_db: sessionmaker[Session]
) -> None:
    async def scenario(broker: CcxtBroker) -> None:
        await broker.submit(buy(0.01))
        with pytest.raises(OrderConflict):
            await broker.submit(buy(0.02))  # same candle and seq, so the same client order id

    with_broker(exchange_server, worker_db, scenario)

    assert exchange_server.request_count(ORDER_PATH, "POST") == 1


def test_insufficient_funds_is_rejected_once_and_never_retried(
    exchange_server: LocalExchangeServer, worker_db: sessionmaker[Session]
) -> None:
    outcome = submit_one(exchange_server, worker_db, buy(10.0))  # ~318k USDT with 10k in the account

    assert outcome.status is OrderStatus.REJECTED
    assert "InsufficientFunds" in outcome.detail
    assert exchange_server.request_count(ORDER_PATH, "POST") == 1
    assert exchange_server.request_count(ORDER_PATH, "GET") == 0  # a refusal needs no lookup
    assert exchange_view(exchange_server)[0] == []


# ----- ambiguous outcomes --------------------------------------------------------------------------------------------


def test_answer_dropped_after_execution_is_resolved_by_lookup(
    exchange_server: LocalExchangeServer, worker_db: sessionmaker[Session]
) -> None:
    exchange_server.inject_fault("drop_after_execute", ORDER_PATH, method="POST")

    outcome = submit_one(exchange_server, worker_db, buy(0.01))

    assert outcome.status is OrderStatus.FILLED and outcome.filled == pytest.approx(0.01)
    assert exchange_server.request_count(ORDER_PATH, "POST") == 1
    orders, trades, btc = exchange_view(exchange_server)
    assert [o["clientOrderId"] for o in orders] == [outcome.client_order_id]
    assert ledger_events(worker_db, outcome.client_order_id) == [
        "intent",
        "unknown",
        "exchange_state",
        "exchange_state",
    ]
    assert compare_books(worker_db, PREFIX, orders, trades, btc).problems == []


@pytest.mark.parametrize("kind", ["error", "internal_error"])
def test_5xx_before_execution_is_rejected_after_the_recv_window_without_resending(
    exchange_server: LocalExchangeServer, worker_db: sessionmaker[Session], kind: str
) -> None:
    exchange_server.inject_fault(kind, ORDER_PATH, method="POST")
    started = time.monotonic()

    outcome = submit_one(exchange_server, worker_db, buy(0.01))

    assert outcome.status is OrderStatus.REJECTED and outcome.detail == "not found after lookup"
    assert time.monotonic() - started >= (RECV_WINDOW_MS + MARGIN_MS) / 1000  # it waited until the order could not run
    assert exchange_server.request_count(ORDER_PATH, "POST") == 1
    assert exchange_view(exchange_server)[0] == []
    assert ledger_events(worker_db, outcome.client_order_id) == ["intent", "unknown", "not_found"]


def test_timeout_whose_request_arrives_too_late_to_execute_is_rejected(worker_db: sessionmaker[Session]) -> None:
    """The exchange stalls the request 0.8 s, past its 0.5 s recvWindow: it refuses it (-1021), nothing executes."""
    sessions = worker_db
    with running_exchange(faults={"timeout_s": 0.8}) as server:
        server.inject_fault("timeout", ORDER_PATH, method="POST")

        outcome = submit_one(server, sessions, buy(0.01), timeout_ms=250)

        assert outcome.status is OrderStatus.REJECTED and outcome.detail == "not found after lookup"
        assert server.request_count(ORDER_PATH, "POST") == 1
        assert exchange_view(server)[0] == []


def test_timeout_whose_request_executes_late_is_found_filled(worker_db: sessionmaker[Session]) -> None:
    """The exchange stalls the request 0.35 s, within its recvWindow (1.5 s here, so a loaded machine cannot push it
    out): it executes after the client gave up (0.25 s); the broker waits out the window before concluding, finds the
    order and records it, without sending it again."""
    sessions = worker_db
    with running_exchange(faults={"timeout_s": 0.35}) as server:
        server.inject_fault("timeout", ORDER_PATH, method="POST")

        outcome = submit_one(server, sessions, buy(0.01), timeout_ms=250, recv_window_ms=1_500)

        assert outcome.status is OrderStatus.FILLED and outcome.filled == pytest.approx(0.01)
        assert server.request_count(ORDER_PATH, "POST") == 1
        orders, trades, btc = exchange_view(server)
        assert len(orders) == 1
        assert compare_books(sessions, PREFIX, orders, trades, btc).problems == []


def test_failed_lookups_leave_the_order_unknown_for_reconciliation(
    exchange_server: LocalExchangeServer, worker_db: sessionmaker[Session]
) -> None:
    exchange_server.inject_fault("drop_after_execute", ORDER_PATH, method="POST")
    exchange_server.inject_fault("error", ORDER_PATH, method="GET", count=100)

    async def scenario(broker: CcxtBroker) -> tuple[OrderOutcome, list[str]]:
        outcome = await broker.submit(buy(0.01))
        exchange_server.clear_faults()
        report = await settle(broker, worker_db)
        return outcome, report.resolved_orders

    outcome, _ = with_broker(exchange_server, worker_db, scenario)

    assert outcome.status is OrderStatus.UNKNOWN and "lookup failed" in outcome.detail
    orders, trades, btc = exchange_view(exchange_server)
    assert compare_books(worker_db, PREFIX, orders, trades, btc).problems == []
    with worker_db() as session:
        row = get_order(session, outcome.client_order_id)
        assert row is not None and row.status == OrderStatus.FILLED


# ----- a faulty period -----------------------------------------------------------------------------------------------


def test_thirty_percent_faults_never_crash_a_submit_and_reconciliation_converges(
    worker_db: sessionmaker[Session],
) -> None:
    faults = FaultSettings(error_rate=0.2, timeout_rate=0.1, timeout_s=0.35, drop_after_execute_rate=0.1, seed=11)
    with running_exchange(initial_balances={"USDT": 100_000.0, "BTC": 1.0}) as server:

        async def scenario(broker: CcxtBroker) -> list[OrderOutcome]:
            server.set_random_faults(faults)
            outcomes = [await broker.submit(order_request(i, 0, 0.001)) for i in range(20)]
            server.set_random_faults(FaultSettings())
            await settle(broker, worker_db)
            return outcomes

        outcomes = with_broker(server, worker_db, scenario, timeout_ms=250)

        assert len(outcomes) == 20
        assert server.request_count(ORDER_PATH, "POST") == 20  # one create per order, whatever happened to it
        ambiguous = [o for o in outcomes if "unknown" in ledger_events(worker_db, o.client_order_id)]
        assert len(ambiguous) >= 3  # the faults did hit order creation
        orders, trades, btc = exchange_view(server)
        check = compare_books(worker_db, PREFIX, orders, trades, btc)
        assert check.problems == []
        with worker_db() as session:
            rejected = sum(stored(session, o.client_order_id).status == "REJECTED" for o in outcomes)
        assert check.exchange_orders == check.db_rows - rejected == 20 - rejected


def test_lookup_by_client_order_id_finds_what_ccxt_placed(exchange_server: LocalExchangeServer) -> None:
    """The lookup the broker relies on: ccxt's binance.fetch_order with origClientOrderId and no order id."""
    client = sync_client(exchange_server.url)
    client.create_order("BTC/USDT", "market", "buy", 0.001, None, {"newClientOrderId": "t1-probe"})
    found = client.fetch_order(None, "BTC/USDT", {"origClientOrderId": "t1-probe"})
    assert found["clientOrderId"] == "t1-probe" and found["status"] == "closed"
    with pytest.raises(ccxt.OrderNotFound):
        client.fetch_order(None, "BTC/USDT", {"origClientOrderId": "t1-absent"})
    assert found["timestamp"] == EXCHANGE_START_MS  # exchange times are the replay clock's, not the wall's


def test_an_amount_the_venue_would_refuse_for_its_size_is_zero(
    exchange_server: LocalExchangeServer, worker_db: sessionmaker[Session]
) -> None:
    """The local exchange's rules (step 0.00001 BTC, minimum notional 5 USDT), as ccxt loaded them at start."""

    async def scenario(broker: CcxtBroker) -> list[float]:
        cases = [(0.000004, 30_000.0), (0.0123456789, 30_000.0), (0.0001, 30_000.0), (0.001, 30_000.0)]
        return [broker.venue_amount(DRILL_MARKET, amount, price) for amount, price in cases]

    below_step, cut, below_notional, fine = with_broker(exchange_server, worker_db, scenario)
    assert below_step == 0.0 and below_notional == 0.0
    assert cut == pytest.approx(0.01234) and fine == pytest.approx(0.001)
