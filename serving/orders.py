"""Orders: the state machine (pure), deterministic client order ids, and the repository helpers over a Session.

The write-ahead rule: `record_intent` inserts the order as PENDING_SUBMIT and the caller commits BEFORE the
order is sent. A crash between commit and answer leaves a PENDING_SUBMIT/UNKNOWN row whose client order id
the exchange knows too, so reconciliation can look it up instead of sending it twice.
"""

from __future__ import annotations

import hashlib
import re
import string
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cta.errors import CTAError, ExchangeError
from serving.models import ControlState, Fill, Order, Position, utc_now


class OrderStatus(StrEnum):
    PENDING_SUBMIT = "PENDING_SUBMIT"
    ACKNOWLEDGED = "ACKNOWLEDGED"
    UNKNOWN = "UNKNOWN"
    REJECTED = "REJECTED"
    OPEN = "OPEN"
    PARTIALLY_FILLED = "PARTIALLY_FILLED"
    FILLED = "FILLED"
    CANCELLED = "CANCELLED"


S = OrderStatus
ALLOWED_TRANSITIONS: dict[OrderStatus, frozenset[OrderStatus]] = {
    S.PENDING_SUBMIT: frozenset(
        {S.ACKNOWLEDGED, S.UNKNOWN, S.REJECTED, S.OPEN, S.PARTIALLY_FILLED, S.FILLED, S.CANCELLED}
    ),
    S.UNKNOWN: frozenset({S.ACKNOWLEDGED, S.OPEN, S.PARTIALLY_FILLED, S.FILLED, S.CANCELLED, S.REJECTED}),
    S.ACKNOWLEDGED: frozenset({S.OPEN, S.PARTIALLY_FILLED, S.FILLED, S.CANCELLED}),
    S.OPEN: frozenset({S.PARTIALLY_FILLED, S.FILLED, S.CANCELLED}),
    S.PARTIALLY_FILLED: frozenset({S.FILLED, S.CANCELLED}),
    S.FILLED: frozenset(),
    S.CANCELLED: frozenset(),
    S.REJECTED: frozenset(),
}
TERMINAL: frozenset[OrderStatus] = frozenset(status for status, nexts in ALLOWED_TRANSITIONS.items() if not nexts)
FILL_TOLERANCE = 1e-9


class IllegalTransition(CTAError):
    """An order was asked to move to a state it cannot reach from its current one (a bug or a stale answer)."""

    def __init__(self, current: OrderStatus, new: OrderStatus) -> None:
        self.current = current
        self.new = new
        super().__init__(f"illegal order transition {current} -> {new}")


class OrderConflict(CTAError):
    """Stored order facts contradict new ones (same client id, different order; a second exchange id)."""


class TradingState(StrEnum):
    """The kill switch: RUNNING trades; REDUCING only reduces positions; HALTED sends nothing."""

    RUNNING = "RUNNING"
    REDUCING = "REDUCING"
    HALTED = "HALTED"


def transition(current: OrderStatus | str, new: OrderStatus | str) -> OrderStatus:
    """The state after `current` → `new`; the same state again is a no-op. Raises IllegalTransition otherwise."""
    current, new = OrderStatus(current), OrderStatus(new)
    if new == current or new in ALLOWED_TRANSITIONS[current]:
        return new
    raise IllegalTransition(current, new)


def is_terminal(status: OrderStatus | str) -> bool:
    """Whether the order is finished: FILLED, CANCELLED or REJECTED."""
    return OrderStatus(status) in TERMINAL


def is_live(status: OrderStatus | str) -> bool:
    """Whether the order may still fill (including one whose fate is not known yet)."""
    return not is_terminal(status)


def never_executed(status: OrderStatus | str, filled: float) -> bool:
    """An order that moved nothing and never will: rejected, or cancelled before any fill."""
    status = OrderStatus(status)
    return status is OrderStatus.REJECTED or (status is OrderStatus.CANCELLED and filled <= 0)


def is_fully_filled(filled: float, amount: float) -> bool:
    """`filled` reaches `amount` up to float rounding in the exchange's decimal-to-float conversion."""
    return filled >= amount * (1.0 - FILL_TOLERANCE)


def from_ccxt_status(status: str | None, filled: float, amount: float) -> OrderStatus:
    """Map a ccxt unified order status plus the fill amounts to an OrderStatus.

    "open" splits into OPEN / PARTIALLY_FILLED / FILLED by `filled`; "closed" is FILLED; "canceled" and
    "expired" are CANCELLED (what filled before stays filled); "rejected" is REJECTED.
    """
    normalised = (status or "").strip().lower()
    if normalised == "open":
        if filled <= 0:
            return OrderStatus.OPEN
        return OrderStatus.FILLED if is_fully_filled(filled, amount) else OrderStatus.PARTIALLY_FILLED
    if normalised == "closed":
        return OrderStatus.FILLED
    if normalised in {"canceled", "cancelled", "expired"}:
        return OrderStatus.CANCELLED
    if normalised == "rejected":
        return OrderStatus.REJECTED
    raise ExchangeError(f"unrecognised ccxt order status {status!r}")


CLIENT_ID_PREFIX = re.compile(r"^[A-Za-z0-9]{1,8}$")
MARKET_HASH_CHARS = 10
MAX_CANDLE_TS = 36**9
MAX_SEQ = 36**6
_BASE36 = string.digits + string.ascii_lowercase


def _base36(value: int) -> str:
    digits = ""
    while True:
        value, remainder = divmod(value, 36)
        digits = _BASE36[remainder] + digits
        if value == 0:
            return digits


def client_order_id(prefix: str, market: str, candle_ts: int, seq: int) -> str:
    """The client order id for the `seq`-th order of `market` at candle `candle_ts`: `<prefix>-<h>-<ts>-<seq>`.

    Deterministic across processes (h is sha256 of the market, ts and seq in base 36), at most 36 characters
    of `[A-Za-z0-9-]`, which Binance's `newClientOrderId` accepts. Re-deciding the same candle gives the same
    id, so the exchange refuses a second copy of an order that was already sent.
    """
    if not CLIENT_ID_PREFIX.match(prefix):
        raise ValueError(f"client order id prefix {prefix!r} must be 1-8 letters or digits")
    if not 0 <= candle_ts < MAX_CANDLE_TS:
        raise ValueError(f"candle_ts {candle_ts} out of range [0, {MAX_CANDLE_TS})")
    if not 0 <= seq < MAX_SEQ:
        raise ValueError(f"seq {seq} out of range [0, {MAX_SEQ})")
    market_hash = hashlib.sha256(market.encode("utf-8")).hexdigest()[:MARKET_HASH_CHARS]
    return f"{prefix}-{market_hash}-{_base36(candle_ts)}-{_base36(seq)}"


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


def _upsert(session: Session, model: type[Any], key: dict[str, Any], values: dict[str, Any]) -> None:
    """INSERT ... ON CONFLICT (key) DO UPDATE, atomic on both backends (no select-then-insert race)."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        pg_statement = postgresql.insert(model).values(**key, **values)
        session.execute(pg_statement.on_conflict_do_update(index_elements=list(key), set_=values))
    elif dialect == "sqlite":
        lite_statement = sqlite.insert(model).values(**key, **values)
        session.execute(lite_statement.on_conflict_do_update(index_elements=list(key), set_=values))
    else:
        raise NotImplementedError(f"upsert on {dialect}")


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
    _upsert(session, Position, {"market": market}, values)
    position = session.get(Position, market, populate_existing=True)
    assert position is not None
    return position


def get_position(session: Session, market: str) -> Position | None:
    """`market`'s stored position, None if it never traded."""
    return session.get(Position, market, populate_existing=True)


@dataclass(frozen=True)
class ControlSnapshot:
    key: str
    state: TradingState
    reason: str
    updated_at: datetime | None
    updated_by: str | None


TRADING_KEY = "trading"


def get_control_state(session: Session, key: str = TRADING_KEY) -> ControlSnapshot:
    """The persisted switch `key`; RUNNING when it was never set."""
    row = session.get(ControlState, key, populate_existing=True)
    if row is None:
        return ControlSnapshot(key=key, state=TradingState.RUNNING, reason="", updated_at=None, updated_by=None)
    return ControlSnapshot(
        key=row.key,
        state=TradingState(row.state),
        reason=row.reason,
        updated_at=row.updated_at,
        updated_by=row.updated_by,
    )


def set_control_state(
    session: Session,
    state: TradingState | str,
    *,
    reason: str,
    updated_by: str,
    key: str = TRADING_KEY,
    now: datetime | None = None,
) -> ControlSnapshot:
    """Persist switch `key` as `state` (flushed, not committed); the caller commits, typically with a ledger entry."""
    values = {
        "state": TradingState(state).value,
        "reason": reason,
        "updated_by": updated_by,
        "updated_at": now or utc_now(),
    }
    _upsert(session, ControlState, {"key": key}, values)
    return get_control_state(session, key)
