"""The reconciliation plan (pure): what to change so one market's rows match what the exchange reports.

`plan_reconciliation` compares the database's view of one market with the exchange's and returns a `ReconcilePlan`;
`serving.reconcile` writes it. No I/O; unit-tested on plain values.

What the plan does, per market: an exchange order with our prefix and no row is adopted; a PENDING_SUBMIT or UNKNOWN
row is resolved from the exchange's answer, or REJECTED when the exchange says it does not know the order and the row
is older than the grace period (an order that could still arrive within its recvWindow is left alone); a live row
whose exchange order moved on takes the exchange's state; missing fills are inserted (deduplicated by trade id); the
position row is set to the exchange's balance when they differ and nothing is in flight. A terminal row the exchange
contradicts (REJECTED here, FILLED there) cannot be moved by the state machine: it is reported as a conflict.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

from serving.client_ids import is_ours
from serving.exchange_reports import ExchangeOrder, ExchangeTrade, sort_trades
from serving.orders import (
    UNRESOLVABLE,
    IllegalTransition,
    OrderStatus,
    is_fully_filled,
    is_live,
    is_terminal,
    transition,
)
from serving.positions import POSITION_TOLERANCE, PositionState, apply_fill

NOT_FOUND_REASON = "never reached the exchange"


@dataclass(frozen=True)
class DbOrder:
    """What the database holds about one order, as plain values."""

    client_order_id: str
    status: OrderStatus
    amount: float
    filled: float
    fills_total: float  # sum of the stored fills' amounts
    exchange_order_id: str | None
    created_ms: int


@dataclass(frozen=True)
class StatusChange:
    client_order_id: str
    previous: OrderStatus
    order: ExchangeOrder


@dataclass(frozen=True)
class Rejection:
    client_order_id: str
    previous: OrderStatus
    reason: str


@dataclass(frozen=True)
class NewFill:
    client_order_id: str
    trade: ExchangeTrade


@dataclass(frozen=True)
class PositionCorrection:
    units_before: float  # the book's units after this plan's fills
    units_after: float  # the exchange's balance


@dataclass(frozen=True)
class Conflict:
    client_order_id: str
    problem: str


@dataclass(frozen=True)
class ReconcilePlan:
    """What to change for one market; empty when the database already matches the exchange."""

    market: str
    adoptions: tuple[ExchangeOrder, ...] = ()
    status_changes: tuple[StatusChange, ...] = ()
    rejections: tuple[Rejection, ...] = ()
    new_fills: tuple[NewFill, ...] = ()
    correction: PositionCorrection | None = None
    conflicts: tuple[Conflict, ...] = ()
    unresolved: tuple[str, ...] = ()  # rows whose fate is still open (lookup failed, within grace, trades unread)

    @property
    def empty(self) -> bool:
        return not (
            self.adoptions
            or self.status_changes
            or self.rejections
            or self.new_fills
            or self.correction
            or self.conflicts
        )


def orders_needing_trades(db_orders: Mapping[str, DbOrder], exchange_orders: Iterable[ExchangeOrder]) -> list[str]:
    """Exchange ids of the orders whose trades must be read: something filled that the database does not hold yet."""
    needing = []
    for order in exchange_orders:
        row = db_orders.get(order.client_order_id)
        if order.filled > 0 and (row is None or not is_fully_filled(row.fills_total, order.filled)):
            needing.append(order.exchange_order_id)
    return needing


def _status_change(row: DbOrder, order: ExchangeOrder) -> StatusChange | Conflict | None:
    """How `row` moves to the exchange's `order`: a change, a conflict, or nothing (already there, or the answer is
    behind what the row knows)."""
    if row.exchange_order_id not in {None, order.exchange_order_id}:
        return Conflict(row.client_order_id, f"exchange id {order.exchange_order_id}, row has {row.exchange_order_id}")
    moves = row.status != order.status or row.filled < order.filled or row.exchange_order_id is None
    if not moves:
        return None
    try:
        transition(row.status, order.status)
    except IllegalTransition:
        if is_terminal(row.status):
            return Conflict(row.client_order_id, f"row is {row.status}, exchange says {order.status}")
        return None
    return StatusChange(row.client_order_id, row.status, order)


def plan_reconciliation(
    *,
    market: str,
    prefix: str,
    db_orders: Sequence[DbOrder],
    exchange_orders: Sequence[ExchangeOrder],
    absent: Collection[str],
    trades: Mapping[str, Sequence[ExchangeTrade]],
    known_trade_ids: Collection[str],
    position: PositionState,
    balance_units: float | None,
    base: str,
    quote: str,
    now_ms: int,
    grace_ms: int,
) -> ReconcilePlan:
    """Compare one market's rows with the exchange and say what to change.

    `db_orders`: the market's live rows plus every row whose client id the exchange reported. `exchange_orders`: the
    exchange's orders (open, recent, looked up), later entries replacing earlier ones with the same client id.
    `absent`: client ids the exchange said it does not know. `trades`: by exchange order id, for (at least) the orders
    `orders_needing_trades` names; an order whose trades are needed but missing is left unresolved. `balance_units`:
    the exchange's total of the base asset, None to skip the position check.
    """
    rows = {row.client_order_id: row for row in db_orders}
    ours = {order.client_order_id: order for order in exchange_orders if is_ours(order.client_order_id, prefix)}
    needing = set(orders_needing_trades(rows, ours.values()))
    adoptions: list[ExchangeOrder] = []
    changes: list[StatusChange] = []
    rejections: list[Rejection] = []
    fills: list[NewFill] = []
    conflicts: list[Conflict] = []
    unresolved: list[str] = []
    seen_trades = set(known_trade_ids)
    for cid, order in sorted(ours.items()):
        if order.exchange_order_id in needing and order.exchange_order_id not in trades:
            unresolved.append(cid)
            continue
        row = rows.get(cid)
        if row is None:
            adoptions.append(order)
        else:
            outcome = _status_change(row, order)
            if isinstance(outcome, Conflict):
                conflicts.append(outcome)
                continue
            if outcome is not None:
                changes.append(outcome)
        for trade in trades.get(order.exchange_order_id, ()):
            if trade.trade_id not in seen_trades:
                seen_trades.add(trade.trade_id)
                fills.append(NewFill(cid, trade))
        if is_live(order.status):
            unresolved.append(cid)
    for row in db_orders:
        if row.client_order_id in ours or not is_live(row.status):
            continue
        if row.client_order_id not in absent:
            unresolved.append(row.client_order_id)
        elif row.status not in UNRESOLVABLE:
            conflicts.append(Conflict(row.client_order_id, f"row is {row.status} but the exchange does not know it"))
        elif now_ms - row.created_ms >= grace_ms:
            rejections.append(Rejection(row.client_order_id, row.status, NOT_FOUND_REASON))
        else:
            unresolved.append(row.client_order_id)
    ordered_fills = _in_trade_order(fills)
    correction = _position_correction(
        position,
        ordered_fills,
        orders=ours,
        balance_units=balance_units,
        base=base,
        quote=quote,
        settled=not unresolved and not conflicts,
    )
    return ReconcilePlan(
        market=market,
        adoptions=tuple(adoptions),
        status_changes=tuple(changes),
        rejections=tuple(rejections),
        new_fills=tuple(ordered_fills),
        correction=correction,
        conflicts=tuple(conflicts),
        unresolved=tuple(sorted(set(unresolved))),
    )


def _in_trade_order(fills: Sequence[NewFill]) -> list[NewFill]:
    by_trade = {id(fill.trade): fill for fill in fills}
    return [by_trade[id(trade)] for trade in sort_trades(fill.trade for fill in fills)]


def _position_correction(
    position: PositionState,
    fills: Sequence[NewFill],
    *,
    orders: Mapping[str, ExchangeOrder],
    balance_units: float | None,
    base: str,
    quote: str,
    settled: bool,
) -> PositionCorrection | None:
    """A correction when the book (after `fills`) differs from the balance, only if no order is in flight: the
    balance of a market with an order whose fills are not all known yet may still move."""
    if balance_units is None or not settled:
        return None
    expected = position
    for fill in fills:
        trade = fill.trade
        expected = apply_fill(
            expected,
            side=orders[fill.client_order_id].side,
            price=trade.price,
            amount=trade.amount,
            fee_cost=trade.fee_cost,
            fee_currency=trade.fee_currency,
            base=base,
            quote=quote,
        )
    if abs(expected.units - balance_units) <= POSITION_TOLERANCE:
        return None
    return PositionCorrection(units_before=expected.units, units_after=balance_units)
