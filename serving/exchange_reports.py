"""What the exchange reports, parsed from ccxt's answers into plain values: orders, trades, balances and errors.

Pure: no I/O. `ExchangeOrder` / `ExchangeTrade` are what reconciliation and the ccxt broker reason about; a ccxt
error is either a definite rejection (the order cannot exist) or an ambiguous outcome (look it up).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import ccxt

from cta.errors import ExchangeError
from serving.orders import OrderStatus, is_fully_filled

log = logging.getLogger(__name__)

CCXT_BALANCE_KEYS = frozenset({"info", "free", "used", "total", "timestamp", "datetime"})  # not assets


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


def parse_orders(raw_orders: Sequence[Mapping[str, Any]]) -> list[ExchangeOrder]:
    """Parse listed orders; one ccxt cannot read is skipped with a warning (it is not ours to reason about)."""
    views = []
    for raw in raw_orders:
        try:
            views.append(order_from_ccxt(raw))
        except Exception as error:  # noqa: BLE001 - skip and report, never stop the pass
            log.warning("reconcile: cannot read order %s (%s)", raw.get("id"), error)
    return views


def trades_complete(order: ExchangeOrder, trades: Iterable[ExchangeTrade]) -> bool:
    """Whether `trades` account for everything the order filled."""
    return is_fully_filled(sum(t.amount for t in trades), order.filled)


def sort_trades(trades: Iterable[ExchangeTrade]) -> list[ExchangeTrade]:
    """Trades in the order they happened: by time, then by numeric trade id where ids are numbers."""
    return sorted(trades, key=lambda t: (t.ts, int(t.trade_id) if t.trade_id.isdigit() else 0, t.trade_id))


def split_symbol(symbol: str) -> tuple[str, str]:
    """("BTC", "USDT") from "BTC/USDT" (a ccxt spot symbol)."""
    base, _, quote = symbol.partition("/")
    return base, quote.split(":")[0]


def balance_amount(balance: Mapping[str, Any], asset: str, kind: str) -> float:
    """`kind` ("free", "used", "total") of `asset` in a ccxt balance; 0 when the exchange lists no such asset."""
    entry = balance.get(asset) or {}
    value = entry.get(kind)
    return 0.0 if value is None else float(value)


def is_definite_rejection(error: BaseException) -> bool:
    """Whether the exchange (or ccxt, before sending) refused the order so that it cannot exist.

    ccxt's ExchangeError family is an answer: the order was refused. Its OperationFailed family (network, timeout,
    5xx, rate limit, unreadable answer) and every non-ccxt error say nothing about whether the order executed. A
    duplicate client order id means the order exists.
    """
    if isinstance(error, ccxt.DuplicateOrderId) or "duplicate" in str(error).lower():
        return False
    return isinstance(error, ccxt.ExchangeError)
