"""The paper broker: the backtest's execution model run live, each order filling at the next candle's open.

An order decided at a candle's close waits (ACKNOWLEDGED) for the next candle, fills at its open with the same
sizing, slippage and fee functions as both backtest engines, and is booked like an exchange fill (order row, fill
row, ledger).

Every market has its own paper account starting with `initial_cash` of quote currency; cash is
replayed from the fills in order, the same arithmetic as the backtest, so replaying the same candles
gives the backtest's fills."""

from __future__ import annotations

import logging
from collections.abc import Callable

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from cta.execution import Execution, fill_fee, fill_price, liquidation_equity, order_units
from cta.lake import Market
from serving import ledger
from serving.client_ids import client_order_id
from serving.models import Decision, Fill, Order
from serving.orders import OrderStatus
from serving.repository import (
    apply_exchange_update,
    get_position,
    insert_intent,
    intent_facts,
    open_orders,
    order_recorded,
    record_fill,
    record_intent,
    upsert_position,
)
from serving.types import Holdings, OrderOutcome, OrderRequest, ReconcileReport

log = logging.getLogger(__name__)


class PaperBroker:
    """Implements `serving.types.Broker` on the worker's own database, filling at the next candle's open."""

    name = "paper"
    sizes_at_fill = True  # each order is sized at the next open from its decision's target, as the backtest does

    def __init__(
        self, sessions: sessionmaker[Session], execution: Execution, prefix: str, now_ms: Callable[[], int]
    ) -> None:
        self.sessions = sessions
        self.execution = execution
        self.prefix = prefix
        self.now_ms = now_ms
        self._accounts: dict[str, tuple[float, float]] = {}  # market -> (units, cash), from the fills
        self._idle: set[str] = set()  # markets known to have no order waiting for a fill (no query per candle)

    def venue_amount(self, market: Market, amount: float, price: float) -> float:
        """The paper venue takes any amount (it sizes each order at its fill from the target anyway)."""
        return amount

    async def start(self) -> ReconcileReport:
        """Nothing external to reconcile: orders acknowledged before a restart fill at the next candle.
        An intent that never got acknowledged (a crash between commit and acknowledgement) is
        acknowledged now, once: the paper venue has no record of it, so it cannot be a duplicate."""
        report = ReconcileReport()
        with self.sessions() as session:
            for order in open_orders(session):
                if order.status == OrderStatus.PENDING_SUBMIT.value:
                    apply_exchange_update(session, order, status=OrderStatus.ACKNOWLEDGED)
                    report.resolved_orders.append(order.client_order_id)
            session.commit()
        return report

    async def reconcile(self) -> ReconcileReport:
        return ReconcileReport()

    async def submit(self, request: OrderRequest) -> OrderOutcome:
        """Record the intent and acknowledge it in one transaction (the paper venue is this database, so
        there is no request in between to lose): it fills at the next candle's open."""
        cid = client_order_id(self.prefix, str(request.market), request.candle_ts, request.seq)
        self._idle.discard(str(request.market))
        facts = intent_facts(request, cid)
        with self.sessions() as session:
            if order_recorded(session, cid):  # the same intent again (never on the decision path): as it was
                order = record_intent(session, **facts)
                return OrderOutcome(cid, OrderStatus(order.status), exchange_order_id=order.exchange_order_id)
            insert_intent(session, **facts, status=OrderStatus.ACKNOWLEDGED, exchange_order_id=f"paper-{cid}")
            ledger.append(session, "order", _order_payload(cid, request), self.now_ms())
            session.commit()
            return OrderOutcome(cid, OrderStatus.ACKNOWLEDGED, exchange_order_id=f"paper-{cid}")

    def on_candle_open(self, market: Market, candle_ts: int, open_price: float) -> None:
        """The paper venue's fill: the orders waiting for this candle fill at its open (`fill_pending`)."""
        self.fill_pending(market, candle_ts, open_price)

    def fill_pending(self, market: Market, candle_ts: int, open_price: float) -> list[OrderOutcome]:
        """Fill the market's acknowledged orders at this candle's open (sized from their decision's
        target, as the backtest does)."""
        outcomes: list[OrderOutcome] = []
        if str(market) in self._idle:
            return outcomes
        waiting = False
        with self.sessions() as session:
            try:
                for order in open_orders(session, str(market)):
                    if order.status != OrderStatus.ACKNOWLEDGED.value or order.candle_ts >= candle_ts:
                        waiting = True
                        continue
                    outcomes.append(self._fill(session, market, order, candle_ts, open_price))
                session.commit()
            except BaseException:
                self._accounts.pop(str(market), None)
                raise
        if not waiting:
            self._idle.add(str(market))
        return outcomes

    def _fill(self, session: Session, market: Market, order: Order, candle_ts: int, open_price: float) -> OrderOutcome:
        execution = self.execution
        target = _target_of(session, order)
        held, cash = self._account(session, str(market))
        equity = liquidation_equity(cash, held, open_price, execution.slippage, execution.fee_rate)
        desired = order_units(
            target * execution.position_fraction, equity, open_price, execution.slippage, execution.fee_rate
        )
        delta = desired - held
        if delta == 0.0:
            apply_exchange_update(session, order, status=OrderStatus.CANCELLED, error="nothing to trade at the open")
            return OrderOutcome(order.client_order_id, OrderStatus.CANCELLED, detail="nothing to trade")
        price = fill_price(open_price, delta, execution.slippage)
        fee = fill_fee(delta, price, execution.fee_rate)
        order.amount = abs(delta)
        order.side = "buy" if delta > 0 else "sell"
        record_fill(
            session,
            order,
            exchange_trade_id=f"paper-{order.client_order_id}",
            price=price,
            amount=abs(delta),
            ts=candle_ts,
            fee_cost=fee,
            fee_currency=market.symbol.split("/")[1],
        )
        apply_exchange_update(
            session, order, status=OrderStatus.FILLED, filled=abs(delta), average_price=price, fee_cost=fee
        )
        self._accounts[str(market)] = (desired, cash - (delta * price + fee))
        position = get_position(session, str(market))
        realized = (position.realized_pnl if position else 0.0) - fee
        upsert_position(
            session, str(market), units=desired, average_price=price if desired else None, realized_pnl=realized
        )
        ledger.append(
            session,
            "fill",
            {"client_order_id": order.client_order_id, "units": delta, "price": price, "fee": fee, "ts": candle_ts},
            self.now_ms(),
        )
        log.info("%s paper fill %+.8f @ %.8f (fee %.8f)", market, delta, price, fee)
        return OrderOutcome(order.client_order_id, OrderStatus.FILLED, abs(delta), price, order.exchange_order_id)

    async def cancel_open_orders(self) -> list[str]:
        """Cancel every order still waiting for its fill (the kill switch's `--cancel-open`)."""
        cancelled: list[str] = []
        with self.sessions() as session:
            for order in open_orders(session):
                apply_exchange_update(session, order, status=OrderStatus.CANCELLED, error="cancelled by kill switch")
                ledger.append(
                    session, "order", {"client_order_id": order.client_order_id, "cancelled": True}, self.now_ms()
                )
                cancelled.append(order.client_order_id)
            session.commit()
        return cancelled

    async def holdings(self, market: Market) -> Holdings:
        with self.sessions() as session:
            units, cash = self._account(session, str(market))
        return Holdings(units, cash)

    def account(self, market: Market) -> tuple[float, float]:
        with self.sessions() as session:
            return self._account(session, str(market))

    def _account(self, session: Session, market: str) -> tuple[float, float]:
        """Units and cash, replayed from the fills once per process, then kept up to date by each fill
        (a rolled-back fill transaction leaves the cache stale: it is dropped then)."""
        if market not in self._accounts:
            self._accounts[market] = _account(session, market, self.execution.initial_cash)
        return self._accounts[market]

    async def close(self) -> None:
        return None


def _account(session: Session, market: str, initial_cash: float) -> tuple[float, float]:
    """Units and cash of the market's paper account, replayed from its fills in order (the
    backtest's arithmetic: cash -= signed units x price + fee)."""
    rows = session.execute(
        select(Fill.amount, Fill.price, Fill.fee_cost, Order.side)
        .join(Order, Order.id == Fill.order_id)
        .where(Fill.market == market)
        .order_by(Fill.ts, Fill.id)
    ).all()
    cash, units = initial_cash, 0.0
    for amount, price, fee, side in rows:
        delta = amount if side == "buy" else -amount
        cash -= delta * price + fee
        units = units + delta
    position = get_position(session, market)
    if position is not None:
        units = position.units  # the booked target units (sums of deltas differ by rounding only)
    return units, cash


def _target_of(session: Session, order: Order) -> float:
    if order.decision_id is None:
        return 0.0
    decision = session.get(Decision, order.decision_id)
    return 0.0 if decision is None else decision.target


def _order_payload(cid: str, request: OrderRequest) -> dict[str, object]:
    return {
        "client_order_id": cid,
        "market": str(request.market),
        "side": request.side,
        "amount": request.amount,
        "target": request.target,
        "candle_ts": request.candle_ts,
        "broker": "paper",
    }
