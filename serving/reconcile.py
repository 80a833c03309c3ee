"""Exchange facts written to the database (fills, order states, reconciliation plans) and a plan's starting snapshot.

`store_fill` and `store_exchange_state` record what the exchange said about one order, `apply_plan` writes a
`serving.reconcile_plan.ReconcilePlan`, `load_snapshot` reads the rows of one market a plan starts from.

Every function works inside the caller's transaction, with a ledger entry for every change. What to compare is
`serving.reconcile_plan`'s business (pure); what to fetch and when is the broker's (`serving.ccxt_reconcile`).
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session

from serving import ledger
from serving.client_ids import is_ours, parse_client_order_id
from serving.exchange_reports import ExchangeOrder, ExchangeTrade, split_symbol
from serving.models import Fill, Order
from serving.orders import OrderStatus
from serving.positions import POSITION_TOLERANCE, PositionState, apply_fill
from serving.reconcile_plan import DbOrder, PositionCorrection, ReconcilePlan
from serving.repository import (
    apply_exchange_update,
    get_order,
    get_position,
    open_orders,
    record_fill,
    record_intent,
    upsert_position,
)
from serving.types import ReconcileReport

log = logging.getLogger(__name__)
K = TypeVar("K")


def position_state(session: Session, market: str) -> PositionState:
    """The stored position of `market` as a value (flat when there is no row)."""
    row = get_position(session, market)
    if row is None:
        return PositionState()
    return PositionState(row.units, row.average_price, row.realized_pnl)


def store_fill(session: Session, order: Order, trade: ExchangeTrade, *, ts_ms: int, source: str) -> bool:
    """Record one trade of `order`, move the position by it and write a "fill" ledger entry; False (nothing written)
    when the trade is already stored."""
    inserted = record_fill(
        session,
        order,
        exchange_trade_id=trade.trade_id,
        price=trade.price,
        amount=trade.amount,
        ts=trade.ts,
        fee_cost=trade.fee_cost,
        fee_currency=trade.fee_currency,
    )
    if not inserted:
        return False
    base, quote = split_symbol(order.symbol)
    after = apply_fill(
        position_state(session, order.market),
        side=order.side,
        price=trade.price,
        amount=trade.amount,
        fee_cost=trade.fee_cost,
        fee_currency=trade.fee_currency,
        base=base,
        quote=quote,
    )
    upsert_position(
        session, order.market, units=after.units, average_price=after.average_price, realized_pnl=after.realized_pnl
    )
    ledger.append(
        session,
        "fill",
        {
            "source": source,
            "client_order_id": order.client_order_id,
            "market": order.market,
            "side": order.side,
            "trade_id": trade.trade_id,
            "price": trade.price,
            "amount": trade.amount,
            "fee_cost": trade.fee_cost,
            "fee_currency": trade.fee_currency,
            "ts": trade.ts,
            "position_units": after.units,
        },
        ts_ms,
    )
    return True


def store_exchange_state(
    session: Session, order: Order, view: ExchangeOrder, *, status: OrderStatus, ts_ms: int, source: str
) -> Order:
    """Move `order` to `status` with the exchange's ids, amounts and fees, and write an "order" ledger entry."""
    previous = order.status
    apply_exchange_update(
        session,
        order,
        status=status,
        filled=view.filled if status is not OrderStatus.ACKNOWLEDGED else None,
        average_price=view.average_price if status is not OrderStatus.ACKNOWLEDGED else None,
        exchange_order_id=view.exchange_order_id,
        fee_cost=view.fee_cost if status is not OrderStatus.ACKNOWLEDGED else None,
        fee_currency=view.fee_currency,
    )
    ledger.append(
        session,
        "order",
        {
            "event": "exchange_state",
            "source": source,
            "client_order_id": order.client_order_id,
            "exchange_order_id": view.exchange_order_id,
            "from": previous,
            "to": order.status,
            "filled": order.filled,
            "average_price": order.average_price,
        },
        ts_ms,
    )
    return order


def _adopt(session: Session, market: str, view: ExchangeOrder, ts_ms: int) -> Order:
    """Insert a row for an exchange order we had none for; the candle comes from the client id when it is ours."""
    parts = parse_client_order_id(view.client_order_id)
    order = record_intent(
        session,
        client_order_id=view.client_order_id,
        market=market,
        symbol=view.symbol,
        side=view.side,
        order_type="market" if view.order_type == "market" else "limit",
        amount=view.amount,
        candle_ts=parts.candle_ts if parts is not None else view.ts,
        limit_price=view.limit_price,
    )
    ledger.append(
        session,
        "reconcile",
        {
            "action": "adopt",
            "market": market,
            "client_order_id": view.client_order_id,
            "exchange_order_id": view.exchange_order_id,
            "side": view.side,
            "amount": view.amount,
            "status": view.status,
        },
        ts_ms,
    )
    return store_exchange_state(session, order, view, status=view.status, ts_ms=ts_ms, source="reconcile")


def apply_plan(session: Session, plan: ReconcilePlan, *, ts_ms: int) -> ReconcileReport:
    """Write `plan` (flushed, not committed) with a ledger entry per change and say what changed."""
    report = ReconcileReport()
    for view in plan.adoptions:
        _adopt(session, plan.market, view, ts_ms)
        report.adopted_orders.append(view.client_order_id)
        log.warning("reconcile %s: adopted exchange order %s", plan.market, view.client_order_id)
    for change in plan.status_changes:
        order = _row(session, change.client_order_id)
        store_exchange_state(session, order, change.order, status=change.order.status, ts_ms=ts_ms, source="reconcile")
        report.resolved_orders.append(change.client_order_id)
    for rejection in plan.rejections:
        order = _row(session, rejection.client_order_id)
        apply_exchange_update(session, order, status=OrderStatus.REJECTED, error=rejection.reason)
        ledger.append(
            session,
            "reconcile",
            {
                "action": "reject",
                "client_order_id": order.client_order_id,
                "from": rejection.previous,
                "reason": rejection.reason,
            },
            ts_ms,
        )
        report.resolved_orders.append(rejection.client_order_id)
    for new_fill in plan.new_fills:
        if store_fill(
            session, _row(session, new_fill.client_order_id), new_fill.trade, ts_ms=ts_ms, source="reconcile"
        ):
            report.new_fills += 1
    if plan.correction is not None:
        _correct_position(session, plan.market, plan.correction, ts_ms)
        report.position_corrections.append(
            f"{plan.market}: {plan.correction.units_before!r} -> {plan.correction.units_after!r}"
        )
    for conflict in plan.conflicts:
        log.error(
            "reconcile %s: order %s conflicts with the exchange: %s",
            plan.market,
            conflict.client_order_id,
            conflict.problem,
        )
        ledger.append(
            session,
            "reconcile",
            {"action": "conflict", "client_order_id": conflict.client_order_id, "problem": conflict.problem},
            ts_ms,
        )
        report.conflicts.append(f"{conflict.client_order_id}: {conflict.problem}")
    report.unresolved_orders.extend(plan.unresolved)
    return report


def _row(session: Session, client_order_id: str) -> Order:
    order = get_order(session, client_order_id)
    if order is None:
        raise LookupError(f"order {client_order_id} vanished from the database during reconciliation")
    return order


def _correct_position(session: Session, market: str, correction: PositionCorrection, ts_ms: int) -> None:
    """Set the position's units to the exchange's balance; cost basis and realized profit stay (they are ours)."""
    current = position_state(session, market)
    units = correction.units_after
    upsert_position(
        session,
        market,
        units=units,
        average_price=current.average_price if units > POSITION_TOLERANCE else None,
        realized_pnl=current.realized_pnl,
    )
    ledger.append(
        session,
        "reconcile",
        {
            "action": "position_correction",
            "market": market,
            "from": current.units,
            "to": units,
        },
        ts_ms,
    )
    log.warning("reconcile %s: position corrected from %r to the exchange's %r", market, current.units, units)


@dataclass
class DbSnapshot:
    """The database's side of one market's reconciliation."""

    orders: list[DbOrder] = field(default_factory=list)
    known_trade_ids: set[str] = field(default_factory=set)
    position: PositionState = field(default_factory=PositionState)


SQL_IN_CHUNK = 500


def _chunks(values: Sequence[K]) -> Iterable[Sequence[K]]:
    """`values` in slices small enough for an SQL IN list on every backend."""
    for start in range(0, len(values), SQL_IN_CHUNK):
        yield values[start : start + SQL_IN_CHUNK]


def load_snapshot(session: Session, market: str, prefix: str, client_ids: Collection[str]) -> DbSnapshot:
    """The market's live rows with our prefix, the rows of `client_ids` (what the exchange reported), their stored
    fill totals and trade ids, and the position."""
    rows = {
        order.client_order_id: order for order in open_orders(session, market) if is_ours(order.client_order_id, prefix)
    }
    for chunk in _chunks(sorted(set(client_ids) - set(rows))):
        rows.update(
            (o.client_order_id, o) for o in session.scalars(select(Order).where(Order.client_order_id.in_(chunk)))
        )
    totals: dict[int, float] = {}
    trade_ids: set[str] = set()
    for ids in _chunks([order.id for order in rows.values()]):
        for order_id, trade_id, amount in session.execute(
            select(Fill.order_id, Fill.exchange_trade_id, Fill.amount).where(Fill.order_id.in_(ids))
        ):
            totals[order_id] = totals.get(order_id, 0.0) + amount
            trade_ids.add(trade_id)
    orders = [
        DbOrder(
            client_order_id=order.client_order_id,
            status=OrderStatus(order.status),
            amount=order.amount,
            filled=order.filled,
            fills_total=totals.get(order.id, 0.0),
            exchange_order_id=order.exchange_order_id,
            created_ms=int(order.created_at.timestamp() * 1000),
        )
        for order in rows.values()
    ]
    return DbSnapshot(orders=orders, known_trade_ids=trade_ids, position=position_state(session, market))
