"""The order book's repository over a Session: write-ahead intents, exchange updates, fills and positions.

Every function writes inside the caller's transaction (flushed, not committed). The write-ahead rule: the caller
commits `record_intent`'s PENDING_SUBMIT row BEFORE the order is sent (see `serving.orders`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cta.errors import CTAError
from serving.db import Prepared, upsert
from serving.models import Fill, Order, Position, table_of, utc_now
from serving.orders import OrderStatus, is_live, transition
from serving.types import OrderRequest


class OrderConflict(CTAError):
    """Stored order facts contradict new ones (same client id, different order; a second exchange id)."""


def record_intent(
    session: Session,
    *,
    client_order_id: str,
    market: str,
    symbol: str,
    side: str,
    order_type: str,
    amount: float,
    candle_ts: int,
    limit_price: float | None = None,
    decision_id: int | None = None,
) -> Order:
    """Insert the order as PENDING_SUBMIT (flushed, not committed: the caller commits BEFORE sending).

    Idempotent: the same intent again returns the stored order; a different order under the same client id
    raises OrderConflict.
    """
    facts: dict[str, Any] = {
        "market": market,
        "symbol": symbol,
        "side": side,
        "type": order_type,
        "amount": amount,
        "limit_price": limit_price,
        "candle_ts": candle_ts,
    }
    existing = session.scalar(select(Order).where(Order.client_order_id == client_order_id))
    if existing is not None:
        differing = sorted(name for name, value in facts.items() if getattr(existing, name) != value)
        if differing:
            raise OrderConflict(f"client order id {client_order_id} already used for a different order: {differing}")
        return existing
    order = Order(
        client_order_id=client_order_id,
        status=OrderStatus.PENDING_SUBMIT.value,
        decision_id=decision_id,
        filled=0.0,
        fee_cost=0.0,
        **facts,
    )
    session.add(order)
    session.flush()
    return order


def intent_facts(request: OrderRequest, cid: str) -> dict[str, Any]:
    """A market order request's facts as `record_intent` and `insert_intent` take them."""
    return {
        "client_order_id": cid,
        "market": str(request.market),
        "symbol": request.market.symbol,
        "side": request.side,
        "order_type": "market",
        "amount": request.amount,
        "candle_ts": request.candle_ts,
        "decision_id": request.decision_id,
    }


_ORDERS = table_of(Order)
_ORDER_BY_CID = Prepared(select(_ORDERS.c.id).where(_ORDERS.c.client_order_id == bindparam("cid")))  # compiled once
_INSERT_ORDER = Prepared(_ORDERS.insert().returning(_ORDERS.c.id))


def order_recorded(session: Session, client_order_id: str) -> bool:
    """Whether an order with this client order id is recorded (one indexed read, no ORM object)."""
    cursor = _ORDER_BY_CID.execute(session.connection(), {"cid": client_order_id})
    try:
        return cursor.fetchone() is not None
    finally:
        cursor.close()


def insert_intent(
    session: Session,
    *,
    client_order_id: str,
    market: str,
    symbol: str,
    side: str,
    order_type: str,
    amount: float,
    candle_ts: int,
    decision_id: int | None = None,
    status: OrderStatus = OrderStatus.PENDING_SUBMIT,
    exchange_order_id: str | None = None,
    created_at: datetime | None = None,
) -> int:
    """Insert a NEW order's row (written, not committed) with one plain INSERT: the decision path's form of
    `record_intent` (the same facts), for a client order id the caller has just found unused (`order_recorded`);
    its id.

    `status` is PENDING_SUBMIT for an order still to be sent (the write-ahead intent); the paper venue, which is
    this database, records its intent already ACKNOWLEDGED (intent and acknowledgement in one transaction, as
    before). The unique client order id still refuses a second row for the same id."""
    now = utc_now()
    inserted = _INSERT_ORDER.execute(
        session.connection(),
        {
            "client_order_id": client_order_id,
            "market": market,
            "symbol": symbol,
            "side": side,
            "type": order_type,
            "amount": amount,
            "limit_price": None,
            "status": status.value,
            "exchange_order_id": exchange_order_id,
            "filled": 0.0,
            "fee_cost": 0.0,
            "decision_id": decision_id,
            "candle_ts": candle_ts,
            "created_at": created_at or now,  # the broker's clock when given (a grace period counts from it)
            "updated_at": now,  # wall clock, as every update stamps it
        },
        insert=True,
    )
    return int(inserted.fetchone()[0])


def apply_exchange_update(
    session: Session,
    order: Order,
    *,
    status: OrderStatus | str,
    filled: float | None = None,
    average_price: float | None = None,
    exchange_order_id: str | None = None,
    fee_cost: float | None = None,
    fee_currency: str | None = None,
    error: str | None = None,
) -> Order:
    """Apply what the exchange said about `order` (flushed, not committed).

    The status moves by `transition` (IllegalTransition on anything else, leaving the order unchanged);
    `filled` and the cumulative fee never move backwards, so a stale answer cannot undo a fill.
    """
    new_status = transition(order.status, status)
    if exchange_order_id is not None and order.exchange_order_id not in {None, exchange_order_id}:
        raise OrderConflict(
            f"order {order.client_order_id} has exchange id {order.exchange_order_id}, update says {exchange_order_id}"
        )
    order.status = new_status.value
    if exchange_order_id is not None:
        order.exchange_order_id = exchange_order_id
    if filled is not None and filled > order.filled:
        order.filled = filled
    if average_price is not None:
        order.average_price = average_price
    if fee_cost is not None and fee_cost > order.fee_cost:
        order.fee_cost = fee_cost
    if fee_currency is not None:
        order.fee_currency = fee_currency
    if error is not None:
        order.last_error = error
    session.flush()
    return order


def record_fill(
    session: Session,
    order: Order,
    *,
    exchange_trade_id: str,
    price: float,
    amount: float,
    ts: int,
    fee_cost: float = 0.0,
    fee_currency: str | None = None,
) -> bool:
    """Store one trade of `order`; False (and nothing written) if the market already has this trade id.

    The pre-check answers the common re-fetch case; the savepoint catches the race where another
    transaction inserted the same trade in between, without spoiling the caller's transaction.
    """
    duplicate = select(Fill.id).where(Fill.market == order.market, Fill.exchange_trade_id == exchange_trade_id)
    if session.scalar(duplicate) is not None:
        return False
    fill = Fill(
        order_id=order.id,
        client_order_id=order.client_order_id,
        exchange_trade_id=exchange_trade_id,
        market=order.market,
        price=price,
        amount=amount,
        fee_cost=fee_cost,
        fee_currency=fee_currency,
        ts=ts,
    )
    try:
        with session.begin_nested():
            session.add(fill)
    except IntegrityError:
        return False
    return True


def fills_for(session: Session, order: Order) -> Sequence[Fill]:
    """The stored trades of `order`, oldest first."""
    return session.scalars(select(Fill).where(Fill.order_id == order.id).order_by(Fill.ts, Fill.id)).all()


def open_orders(session: Session, market: str | None = None) -> Sequence[Order]:
    """Orders that may still fill (not FILLED, CANCELLED or REJECTED), oldest first, optionally for one market."""
    live = [status.value for status in OrderStatus if is_live(status)]
    query = select(Order).where(Order.status.in_(live))
    if market is not None:
        query = query.where(Order.market == market)
    return session.scalars(query.order_by(Order.id)).all()


def orders_by_prefix(session: Session, prefix: str, market: str | None = None) -> Sequence[Order]:
    """Orders whose client order id starts with `prefix` (taken literally, LIKE wildcards escaped)."""
    query = select(Order).where(Order.client_order_id.startswith(prefix, autoescape=True))
    if market is not None:
        query = query.where(Order.market == market)
    return session.scalars(query.order_by(Order.id)).all()


def get_order(session: Session, client_order_id: str) -> Order | None:
    """The order with this client order id, if recorded."""
    return session.scalar(select(Order).where(Order.client_order_id == client_order_id))


def upsert_position(
    session: Session,
    market: str,
    *,
    units: float,
    average_price: float | None,
    realized_pnl: float,
    now: datetime | None = None,
) -> Position:
    """Set `market`'s position (insert or replace) and return the stored row."""
    values = {
        "units": units,
        "average_price": average_price,
        "realized_pnl": realized_pnl,
        "updated_at": now or utc_now(),
    }
    upsert(session, Position, {"market": market}, values)
    position = session.get(Position, market, populate_existing=True)
    assert position is not None
    return position


def get_position(session: Session, market: str) -> Position | None:
    """`market`'s stored position, None if it never traded."""
    return session.get(Position, market, populate_existing=True)
