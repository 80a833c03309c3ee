"""The worker's target follows what its orders achieved: an order that never executed (rejected, cancelled unfilled,
or never sent because the worker stopped first) leaves the target where it was, so the next decision tries again;
an order whose fate is not known yet is followed until it is. Without this, a worker restarted after a crash before
send believed it was long while flat, and a long/flat model then never traded again (every exit was "amount 0")."""

from __future__ import annotations

import asyncio
import math
from collections import deque

import pytest
from sqlalchemy.orm import Session, sessionmaker

from cta.config import load_settings
from cta.execution import SIZE_HAIRCUT, Execution
from cta.lake import Market
from serving.control import ControlSnapshot, TradingState
from serving.decisions import place_order
from serving.market_state import MarketState
from serving.models import Decision
from serving.orders import OrderStatus, never_executed
from serving.repository import apply_exchange_update, get_order, record_intent
from serving.target import ORDER_UNDER_WAY, OrderResult, follow_order, restore_interrupted_order, settle_in_flight
from serving.types import Holdings, OrderOutcome, OrderRequest
from tests.conftest import CONFIG_DIR

BTC = Market("binance", "BTC/USDT", "1h")
CANDLE = 1_654_041_600_000


def state(target: float = 0.0) -> MarketState:
    return MarketState(BTC, 3_600_000, deque(), deque(), target=target)


@pytest.mark.parametrize(
    ("status", "filled", "expected"),
    [
        (OrderStatus.FILLED, 1.0, 1.0),
        (OrderStatus.ACKNOWLEDGED, 0.0, 1.0),  # the paper broker fills at the next open
        (OrderStatus.PARTIALLY_FILLED, 0.4, 1.0),
        (OrderStatus.OPEN, 0.0, 1.0),
        (OrderStatus.UNKNOWN, 0.0, 1.0),  # may have executed: followed (below)
        (OrderStatus.REJECTED, 0.0, 0.0),
        (OrderStatus.CANCELLED, 0.0, 0.0),
        (OrderStatus.CANCELLED, 0.3, 1.0),  # part of it executed
    ],
)
def test_the_target_moves_only_with_an_order_that_executed_or_may(
    status: OrderStatus, filled: float, expected: float
) -> None:
    market = state(0.0)
    follow_order(market, 1.0, OrderResult("cta-1", "order", status=status, filled=filled))
    assert market.target == expected
    assert (market.in_flight is not None) == (status is OrderStatus.UNKNOWN)


def test_blocked_orders_keep_the_target_and_nothing_to_trade_reaches_it() -> None:
    blocked = state(1.0)
    follow_order(blocked, 0.0, OrderResult(None, "blocked: daily loss limit"))
    assert blocked.target == 1.0
    there = state(1.0)
    follow_order(there, 0.0, OrderResult(None, "nothing to trade", at_target=True))
    assert there.target == 0.0


def add_decision(sessions: sessionmaker[Session], target: float, delta: float, reason: str = ORDER_UNDER_WAY) -> int:
    with sessions() as session:
        decision = Decision(
            market=str(BTC),
            candle_ts=CANDLE,
            model_name="m",
            model_version="1",
            feature_hash="0" * 16,
            inputs="{}",
            prediction=target,
            target=target,
            delta=delta,
            reason=reason,
        )
        session.add(decision)
        session.commit()
        return int(decision.id)


def add_order(sessions: sessionmaker[Session], decision_id: int, status: OrderStatus) -> str:
    cid = "cta-test-0"
    with sessions.begin() as session:
        order = record_intent(
            session,
            client_order_id=cid,
            market=str(BTC),
            symbol=BTC.symbol,
            side="buy",
            order_type="market",
            amount=0.01,
            candle_ts=CANDLE,
            decision_id=decision_id,
        )
        if status is not OrderStatus.PENDING_SUBMIT:
            apply_exchange_update(session, order, status=status, error="test")
    return cid


def decision(sessions: sessionmaker[Session], decision_id: int) -> Decision:
    with sessions() as session:
        found = session.get(Decision, decision_id)
        assert found is not None
        return found


@pytest.mark.parametrize(
    ("status", "target", "in_flight"),
    [
        (None, 0.0, False),  # stopped before the intent: nothing was sent
        (OrderStatus.REJECTED, 0.0, False),  # reconciliation found it never executed
        (OrderStatus.ACKNOWLEDGED, 1.0, False),
        (OrderStatus.UNKNOWN, 1.0, True),  # still in flight after the start-up reconciliation
    ],
)
def test_a_restart_after_a_crash_mid_order_restores_what_the_order_achieved(
    worker_db: sessionmaker[Session], status: OrderStatus | None, target: float, in_flight: bool
) -> None:
    decision_id = add_decision(worker_db, target=1.0, delta=1.0)
    if status is not None:
        add_order(worker_db, decision_id, status)
    market = state(1.0)  # what the decision row said
    restore_interrupted_order(worker_db, market, decision(worker_db, decision_id))
    assert market.target == target
    assert (market.in_flight is not None) == in_flight
    stored = decision(worker_db, decision_id)
    assert stored.target == target and stored.reason != ORDER_UNDER_WAY  # the row says what happened


def test_an_order_in_flight_that_turns_out_rejected_puts_the_target_back(worker_db: sessionmaker[Session]) -> None:
    cid = add_order(worker_db, add_decision(worker_db, 1.0, 1.0), OrderStatus.UNKNOWN)
    market = state(1.0)
    market.in_flight = (cid, 0.0)
    settle_in_flight(worker_db, market)
    assert (market.target, market.in_flight) == (1.0, (cid, 0.0))  # still unknown: nothing changes
    with worker_db.begin() as session:
        order = get_order(session, cid)
        assert order is not None
        apply_exchange_update(session, order, status=OrderStatus.REJECTED, error="not found after lookup")
    settle_in_flight(worker_db, market)
    assert (market.target, market.in_flight) == (0.0, None)


def test_an_order_in_flight_that_executed_keeps_the_target(worker_db: sessionmaker[Session]) -> None:
    cid = add_order(worker_db, add_decision(worker_db, 1.0, 1.0), OrderStatus.FILLED)
    market = state(1.0)
    market.in_flight = (cid, 0.0)
    settle_in_flight(worker_db, market)
    assert (market.target, market.in_flight) == (1.0, None)


def test_never_executed() -> None:
    assert never_executed(OrderStatus.REJECTED, 0.0) and never_executed("CANCELLED", 0.0)
    assert not never_executed(OrderStatus.CANCELLED, 0.1) and not never_executed(OrderStatus.UNKNOWN, 0.0)


class HeldBroker:
    """A broker whose venue refuses steps below 0.00001 units: only what `place_order` asks of it (holdings, the
    venue's amount) is answered; a submit would be a failure of the test."""

    name = "held"
    sizes_at_fill = False

    def __init__(self, units: float, cash: float) -> None:
        self.held = Holdings(units, cash)
        self.sent: list[OrderRequest] = []

    async def holdings(self, market: Market) -> Holdings:
        return self.held

    def venue_amount(self, market: Market, amount: float, price: float) -> float:
        cut = math.floor(amount / 0.00001) * 0.00001
        return cut if cut * price >= 5.0 else 0.0

    async def submit(self, request: OrderRequest) -> OrderOutcome:
        self.sent.append(request)
        return OrderOutcome("cta-x", OrderStatus.FILLED, request.amount)


def place(broker: HeldBroker, target: float, delta: float) -> OrderResult:
    settings = load_settings(env={}, config_dir=CONFIG_DIR)
    execution = Execution(fee_rate=0.001, slippage=0.0, position_fraction=1.0, initial_cash=10_000.0)
    control = ControlSnapshot("trading", TradingState.RUNNING, "", None, None)
    return asyncio.run(
        place_order(
            broker,  # type: ignore[arg-type]
            settings,
            execution,
            state(target - delta),
            ts=CANDLE,
            close=30_000.0,
            target=target,
            decision_id=1,
            model=None,
            now=CANDLE + 3_600_000,
            control=control,
        )
    )


def test_a_difference_below_the_venues_minimum_is_at_the_target_not_a_rejected_order() -> None:
    """The worker believed it was flat while it held the long it wanted (a restart under load): each long candle
    sent a buy of a few satoshis that the venue refused, its target stayed flat, the flat candles were holds, and
    the position the model did not want on those candles was never sold. Now the step is not sent: the target
    reaches the holdings, and the next flat candle sells."""
    buffer = load_settings(env={}, config_dir=CONFIG_DIR).serving.cash_buffer
    units, close = 0.2, 30_000.0
    # the cash with which a target of 1 holds 0.000003 more than `units`: a buy below the venue's 0.00001 step
    cash = (units + 0.000003) * close * 1.001 / ((1 - buffer) * (1 - SIZE_HAIRCUT)) - units * close * 0.999
    broker = HeldBroker(units=units, cash=cash)
    result = place(broker, target=1.0, delta=1.0)
    assert result.at_target and broker.sent == []
    market = state(0.0)
    follow_order(market, 1.0, result)
    assert market.target == 1.0


def test_the_side_follows_the_holdings_not_the_decisions_sign() -> None:
    """A target of 1 from a believed 0 while holding more than a target of 1 holds: a sell, not a buy."""
    broker = HeldBroker(units=0.5, cash=0.0)
    result = place(broker, target=1.0, delta=1.0)
    assert result.order_id == "cta-x" and [r.side for r in broker.sent] == ["sell"]
