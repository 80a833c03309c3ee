"""Reconciliation: bring the database to what the exchange knows (the exchange is the truth).

Three layers, kept apart:
- pure: ccxt answers parsed into `ExchangeOrder` / `ExchangeTrade`, client order id parsing, the position
  arithmetic of one fill (`apply_fill`) and `plan_reconciliation`, which compares the database's view of one market
  with the exchange's and returns a `ReconcilePlan`. No I/O; unit-tested on plain values.
- database: `store_fill`, `store_exchange_state` and `apply_plan` write facts and a plan inside the caller's
  transaction, with a ledger entry for every change.
- network: what to fetch and when is the broker's business (`serving.ccxt_broker`).

What the plan does, per market: an exchange order with our prefix and no row is adopted; a PENDING_SUBMIT or UNKNOWN
row is resolved from the exchange's answer, or REJECTED when the exchange says it does not know the order and the row
is older than the grace period (an order that could still arrive within its recvWindow is left alone); a live row
whose exchange order moved on takes the exchange's state; missing fills are inserted (deduplicated by trade id); the
position row is set to the exchange's balance when they differ and nothing is in flight. A terminal row the exchange
contradicts (REJECTED here, FILLED there) cannot be moved by the state machine: it is reported as a conflict.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session

from serving import ledger
from serving.models import Fill, Order
from serving.orders import (
    MARKET_HASH_CHARS,
    IllegalTransition,
    OrderStatus,
    apply_exchange_update,
    from_ccxt_status,
    get_order,
    get_position,
    is_fully_filled,
    is_live,
    is_terminal,
    open_orders,
    record_fill,
    record_intent,
    transition,
    upsert_position,
)
from serving.types import ReconcileReport

log = logging.getLogger(__name__)
K = TypeVar("K")

POSITION_TOLERANCE = 5e-9  # half the last of the 8 decimals exchanges report balances with
NOT_FOUND_REASON = "never reached the exchange"
UNRESOLVABLE = frozenset({OrderStatus.PENDING_SUBMIT, OrderStatus.UNKNOWN})  # rows whose fate only a lookup can tell


# ----- exchange facts (pure) -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExchangeTrade:
    """One fill as the exchange reports it."""

    trade_id: str
    order_id: str | None
    price: float
    amount: float
    fee_cost: float
    fee_currency: str | None
    ts: int


@dataclass(frozen=True)
class ExchangeOrder:
    """One order as the exchange reports it, with the trades the answer carried (often none)."""

    client_order_id: str
    exchange_order_id: str
    symbol: str
    side: str
    order_type: str
    amount: float
    filled: float
    average_price: float | None
    limit_price: float | None
    status: OrderStatus
    ts: int
    fee_cost: float | None = None
    fee_currency: str | None = None
    trades: tuple[ExchangeTrade, ...] = ()


def _float(value: Any, default: float = 0.0) -> float:
    return default if value is None else float(value)


def _fee(raw: Mapping[str, Any]) -> tuple[float | None, str | None]:
    fee = raw.get("fee") or {}
    cost = fee.get("cost")
    return (None if cost is None else float(cost)), fee.get("currency")


def trade_from_ccxt(raw: Mapping[str, Any], *, order_id: str | None = None, default_ts: int = 0) -> ExchangeTrade:
    """A ccxt unified trade; trades inside an order answer lack their order id and time, hence the defaults."""
    fee_cost, fee_currency = _fee(raw)
    timestamp = raw.get("timestamp")
    trade_order = raw.get("order")
    return ExchangeTrade(
        trade_id=str(raw["id"]),
        order_id=str(trade_order) if trade_order is not None else order_id,
        price=float(raw["price"]),
        amount=float(raw["amount"]),
        fee_cost=fee_cost or 0.0,
        fee_currency=fee_currency,
        ts=int(timestamp) if timestamp is not None else default_ts,
    )


def order_from_ccxt(raw: Mapping[str, Any]) -> ExchangeOrder:
    """A ccxt unified order. Raises ExchangeError for a status ccxt does not know, KeyError for a missing id."""
    order_id = str(raw["id"])
    amount = _float(raw.get("amount"))
    filled = _float(raw.get("filled"))
    ts = int(raw.get("timestamp") or 0)
    trades = tuple(
        trade_from_ccxt(t, order_id=order_id, default_ts=ts) for t in raw.get("trades") or () if t.get("id") is not None
    )
    fee_cost, fee_currency = _fee(raw)
    average = raw.get("average")
    price = raw.get("price")
    return ExchangeOrder(
        client_order_id=str(raw.get("clientOrderId") or ""),
        exchange_order_id=order_id,
        symbol=str(raw["symbol"]),
        side=str(raw["side"]),
        order_type=str(raw.get("type") or "market"),
        amount=amount,
        filled=filled,
        average_price=None if average is None else float(average),
        limit_price=None if price is None or raw.get("type") == "market" else float(price),
        status=from_ccxt_status(raw.get("status"), filled, amount),
        ts=ts,
        fee_cost=fee_cost,
        fee_currency=fee_currency,
        trades=trades,
    )


def trades_complete(order: ExchangeOrder, trades: Iterable[ExchangeTrade]) -> bool:
    """Whether `trades` account for everything the order filled."""
    return is_fully_filled(sum(t.amount for t in trades), order.filled)


def sort_trades(trades: Iterable[ExchangeTrade]) -> list[ExchangeTrade]:
    """Trades in the order they happened: by time, then by numeric trade id where ids are numbers."""
    return sorted(trades, key=lambda t: (t.ts, int(t.trade_id) if t.trade_id.isdigit() else 0, t.trade_id))


# ----- client order ids (pure) -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClientIdParts:
    prefix: str
    market_hash: str
    candle_ts: int
    seq: int


def is_ours(client_order_id: str, prefix: str) -> bool:
    """Whether the id was made by `serving.orders.client_order_id` with this prefix ("cta" does not match "cta2-")."""
    return client_order_id.startswith(prefix + "-")


def market_hash(market: str) -> str:
    """The market part of a client order id (see `serving.orders.client_order_id`)."""
    return hashlib.sha256(market.encode("utf-8")).hexdigest()[:MARKET_HASH_CHARS]


def parse_client_order_id(client_order_id: str) -> ClientIdParts | None:
    """The parts of `<prefix>-<market hash>-<candle ts base36>-<seq base36>`, None for any other shape."""
    parts = client_order_id.split("-")
    if len(parts) != 4 or len(parts[1]) != MARKET_HASH_CHARS:
        return None
    prefix, hashed, ts36, seq36 = parts
    try:
        return ClientIdParts(prefix, hashed, int(ts36, 36), int(seq36, 36))
    except ValueError:
        return None


# ----- positions (pure) ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PositionState:
    """Base units held, their average cost (None when unknown or flat) and the realized profit in quote."""

    units: float = 0.0
    average_price: float | None = None
    realized_pnl: float = 0.0


def apply_fill(
    position: PositionState,
    *,
    side: str,
    price: float,
    amount: float,
    fee_cost: float,
    fee_currency: str | None,
    base: str,
    quote: str,
) -> PositionState:
    """The position after one fill, fees included where the exchange charged them.

    A buy's fee in the base asset reduces the units received (spot exchanges deduct it from them); in the quote asset
    it adds to the cost. A sell realizes `(price - average cost)` on the units it closes, minus its fee. Units with no
    known cost (adopted from a balance correction) are costed at the fill's price.
    """
    basis = position.average_price if position.average_price is not None else price
    held = max(position.units, 0.0)
    if side == "buy":
        received = amount - (fee_cost if fee_currency == base else 0.0)
        cost = amount * price + (fee_cost if fee_currency == quote else 0.0)
        units = position.units + received
        average = (held * basis + cost) / units if units > POSITION_TOLERANCE else None
        return PositionState(units, average, position.realized_pnl)
    fee_value = fee_cost if fee_currency == quote else fee_cost * price if fee_currency == base else 0.0
    delivered = amount + (fee_cost if fee_currency == base else 0.0)
    closing = min(amount, held)
    realized = position.realized_pnl + closing * (price - basis) - fee_value
    units = position.units - delivered
    return PositionState(units, position.average_price if units > POSITION_TOLERANCE else None, realized)


def split_symbol(symbol: str) -> tuple[str, str]:
    """("BTC", "USDT") from "BTC/USDT" (a ccxt spot symbol)."""
    base, _, quote = symbol.partition("/")
    return base, quote.split(":")[0]


# ----- the plan (pure) -------------------------------------------------------------------------------------------


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


# ----- database (inside the caller's transaction) ----------------------------------------------------------------


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
