"""What the serving worker, its brokers, its risk checks and its API exchange: typed values, the Broker protocol."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal, Protocol, TypeAlias

from cta.lake import Market
from serving.orders import OrderStatus

Side = Literal["buy", "sell"]


@dataclass(frozen=True)
class OrderRequest:
    """One order the worker wants, after `decide()` and the risk checks.

    `target` is the position (fraction of equity) the order moves to. A broker that fills at the
    next bar's open (the paper broker, like the backtest) sizes the order there from `target`; a
    broker that sends a market order now (ccxt) uses `amount`, sized from `reference_price`."""

    market: Market
    side: Side
    amount: float  # base units, > 0 (estimate at reference_price)
    target: float  # position after the order, fraction of equity
    candle_ts: int  # open time (ms) of the closed candle whose decision this is
    reference_price: float  # that candle's close
    decision_id: int | None = None
    seq: int = 0  # distinguishes several orders of one market and candle (client order id)


@dataclass(frozen=True)
class OrderOutcome:
    """What a broker knows about an order right after submitting it (or resolving it)."""

    client_order_id: str
    status: OrderStatus
    filled: float = 0.0
    average_price: float | None = None
    exchange_order_id: str | None = None
    detail: str = ""
    # time.perf_counter() when the request went to the venue's client (None: nothing sent by this call); timing only
    sent_at: float | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Holdings:
    """Base units held and quote cash free, per the broker's books (after reconciliation)."""

    units: float
    cash: float


@dataclass
class ReconcileReport:
    """What a reconciliation changed in the database to match the exchange."""

    adopted_orders: list[str] = field(default_factory=list)  # exchange orders with our prefix we had no row for
    resolved_orders: list[str] = field(default_factory=list)  # UNKNOWN / PENDING_SUBMIT (or other live) rows moved
    new_fills: int = 0
    position_corrections: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)  # terminal rows the exchange contradicts (need a human)
    unresolved_orders: list[str] = field(default_factory=list)  # rows still in flight or unknown after this pass

    @property
    def changed(self) -> bool:
        return bool(self.adopted_orders or self.resolved_orders or self.new_fills or self.position_corrections)

    def merge(self, other: ReconcileReport) -> None:
        """Add `other` (another market's report) to this one."""
        self.adopted_orders.extend(other.adopted_orders)
        self.resolved_orders.extend(other.resolved_orders)
        self.new_fills += other.new_fills
        self.position_corrections.extend(other.position_corrections)
        self.conflicts.extend(other.conflicts)
        self.unresolved_orders.extend(other.unresolved_orders)


class CrashPoint(StrEnum):
    """The points of an order's path where a broker calls its `OrderCheckpoint`."""

    BEFORE_SEND = "before_send"  # the intent is committed, nothing sent
    AFTER_SEND = "after_send"  # the request went out (its call returned or raised), nothing recorded
    AFTER_ACK = "after_ack"  # ACKNOWLEDGED is committed, no fill
    DURING_FILL = "during_fill"  # a fill is committed, the final status not


# Called by a broker at each CrashPoint of an order: with the order's request, or None when the broker is recording
# an answer about something else (a cancellation). The default does nothing; crash drills install one that kills the
# process there.
OrderCheckpoint: TypeAlias = Callable[[CrashPoint, OrderRequest | None], None]


def no_checkpoint(point: CrashPoint, request: OrderRequest | None) -> None:
    """The default `OrderCheckpoint`: nothing happens at any point."""


class Broker(Protocol):
    """Places orders with write-ahead intents. Every implementation commits the intent row
    (PENDING_SUBMIT, deterministic client order id) before any request leaves the process and never
    blindly resubmits: an ambiguous outcome is resolved by lookup."""

    name: str

    @property
    def sizes_at_fill(self) -> bool:
        """Whether the broker sizes each order itself at its fill price, from `OrderRequest.target` (the paper
        venue, at the next candle's open); False when it sends `OrderRequest.amount` (sized from the reference
        price, so the worker keeps a cash buffer for the price moving before the fill)."""
        ...

    def venue_amount(self, market: Market, amount: float, price: float) -> float:
        """`amount` (> 0) as the venue would take it: cut to its amount precision, 0.0 when below its minimum
        amount or notional at `price`. An order the venue would refuse for its size is never sent: the worker
        treats the holdings as at the target instead (a rejection would leave its target behind the holdings)."""
        ...

    async def start(self) -> ReconcileReport:
        """Reconcile with the venue before any new order."""
        ...

    async def submit(self, request: OrderRequest) -> OrderOutcome: ...

    async def reconcile(self) -> ReconcileReport: ...

    async def holdings(self, market: Market) -> Holdings: ...

    def on_candle_open(self, market: Market, candle_ts: int, open_price: float) -> None:
        """A candle of `market` opened at `open_price` (the worker calls this before deciding on it): a venue that
        fills at the next open (paper) fills the orders waiting for it; a real venue has nothing to do."""
        ...

    async def cancel_open_orders(self) -> list[str]:
        """Cancel every open order of this broker (the kill switch's cancel_open); the client order ids cancelled."""
        ...

    async def close(self) -> None: ...
