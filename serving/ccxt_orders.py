"""Orders on a ccxt venue: looking one up by client order id, and recording what the venue says about it.

`VenueOrders` is the part of the ccxt broker that reads orders and trades (through the venue's `read`, which retries
temporary errors) and writes their state to the database: acknowledgement, then each fill with its position move,
then the exchange's status, only once every fill it implies is stored. It sends nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol, TypeVar

import ccxt
from sqlalchemy.orm import Session, sessionmaker

from cta.clock import Clock
from serving import ledger
from serving.balances import BalanceView
from serving.exchange_reports import (
    ExchangeOrder,
    ExchangeTrade,
    order_from_ccxt,
    sort_trades,
    trade_from_ccxt,
    trades_complete,
)
from serving.models import Order
from serving.orders import UNRESOLVABLE, OrderStatus, reachable
from serving.reconcile import store_exchange_state, store_fill
from serving.repository import apply_exchange_update, get_order
from serving.types import CrashPoint, OrderCheckpoint, OrderOutcome, OrderRequest

log = logging.getLogger(__name__)
T = TypeVar("T")


class TradingVenue(Protocol):
    """What the broker needs from the exchange adapter (`cta.exchange.ExchangeAdapter` is one)."""

    @property
    def client(self) -> Any:
        """The async ccxt exchange (signed), for create_order."""
        ...

    async def read(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        """A read, retried on temporary errors."""
        ...

    async def close(self) -> None: ...


def order_row(session: Session, cid: str) -> Order:
    """The row of client order id `cid`, which the broker committed before sending."""
    order = get_order(session, cid)
    if order is None:
        raise LookupError(f"order {cid} has no row (its intent was never committed)")
    return order


class VenueOrders:
    """Reads orders and trades from the venue and records them; shares the broker's balance view and checkpoint."""

    def __init__(
        self,
        venue: TradingVenue,
        sessions: sessionmaker[Session],
        clock: Clock,
        balances: BalanceView,
        checkpoint: OrderCheckpoint,
        *,
        recent_orders_limit: int,
    ) -> None:
        self.venue = venue
        self.client = venue.client
        self.sessions = sessions
        self.clock = clock
        self.balances = balances
        self.checkpoint = checkpoint
        self.recent_orders_limit = recent_orders_limit

    # ----- reads -------------------------------------------------------------------------------------------------

    async def lookup(self, symbol: str, cid: str) -> ExchangeOrder | None:
        """The order with client id `cid`: by id, else among the open orders, else among the recent orders."""
        found = await self.fetch_by_client_id(symbol, cid)
        if found is not None:
            return found
        for what, call in (
            ("fetch_open_orders", lambda: self.client.fetch_open_orders(symbol)),
            ("fetch_orders", lambda: self.client.fetch_orders(symbol, None, self.recent_orders_limit)),
        ):
            for raw in await self.venue.read(f"{what} {symbol}", call):
                if raw.get("clientOrderId") == cid:
                    return order_from_ccxt(raw)
        return None

    async def fetch_by_client_id(self, symbol: str, cid: str) -> ExchangeOrder | None:
        async def fetch() -> dict[str, Any] | None:
            try:
                found: dict[str, Any] = await self.client.fetch_order(None, symbol, {"origClientOrderId": cid})
            except ccxt.OrderNotFound:
                return None
            return found

        raw = await self.venue.read(f"fetch_order {cid}", fetch)
        return None if raw is None else order_from_ccxt(raw)

    async def order_trades(self, view: ExchangeOrder) -> list[ExchangeTrade]:
        raw = await self.venue.read(
            f"fetch_order_trades {view.exchange_order_id}",
            lambda: self.client.fetch_order_trades(view.exchange_order_id, view.symbol),
        )
        return [trade_from_ccxt(t, order_id=view.exchange_order_id, default_ts=view.ts) for t in raw]

    # ----- records -----------------------------------------------------------------------------------------------

    async def record(
        self, request: OrderRequest | None, cid: str, view: ExchangeOrder, source: str = "submit"
    ) -> OrderOutcome:
        """Store what the exchange says about a sent order: acknowledgement, fills, then its status. `request` is
        the order being submitted (for the checkpoint), None when recording something else (a cancellation)."""
        now = self.clock.now_ms()
        with self.sessions.begin() as session:
            order = order_row(session, cid)
            if order.status in UNRESOLVABLE:
                store_exchange_state(session, order, view, status=OrderStatus.ACKNOWLEDGED, ts_ms=now, source=source)
        self.checkpoint(CrashPoint.AFTER_ACK, request)
        trades: Sequence[ExchangeTrade] = view.trades
        if view.filled > 0 and not trades_complete(view, trades):
            try:
                trades = await self.order_trades(view)
            except Exception as error:  # noqa: BLE001 - the fills are read again by reconciliation
                log.warning("order %s: trades unreadable (%s); left for reconciliation", cid, error)
                return self.outcome(cid, detail=f"fills pending: {error}")
        for trade in sort_trades(trades):
            with self.sessions.begin() as session:
                order = order_row(session, cid)
                symbol, side = order.symbol, order.side
                stored = store_fill(session, order, trade, ts_ms=self.clock.now_ms(), source=source)
            if stored:
                self.balances.apply_fill(symbol, side, trade)
                self.checkpoint(CrashPoint.DURING_FILL, request)
        if not trades_complete(view, trades):
            return self.outcome(cid, detail="fills pending")
        with self.sessions.begin() as session:
            order = order_row(session, cid)
            if reachable(order.status, view.status):
                store_exchange_state(session, order, view, status=view.status, ts_ms=self.clock.now_ms(), source=source)
            else:
                log.error("order %s is %s here, the exchange says %s", cid, order.status, view.status)
        return self.outcome(cid)

    def mark(self, cid: str, status: OrderStatus, reason: str, event: str) -> None:
        """Move the row to REJECTED or UNKNOWN with the reason, and say so in the ledger."""
        with self.sessions.begin() as session:
            order = order_row(session, cid)
            previous = order.status
            apply_exchange_update(session, order, status=status, error=reason)
            ledger.append(
                session,
                "order",
                {"event": event, "client_order_id": cid, "from": previous, "to": order.status, "reason": reason},
                self.clock.now_ms(),
            )

    def outcome(self, cid: str, detail: str = "") -> OrderOutcome:
        """What the database now holds about the order, as the broker reports it."""
        with self.sessions() as session:
            order = order_row(session, cid)
            return OrderOutcome(
                client_order_id=cid,
                status=OrderStatus(order.status),
                filled=order.filled,
                average_price=order.average_price,
                exchange_order_id=order.exchange_order_id,
                detail=detail or order.last_error or "",
            )
