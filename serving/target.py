"""The worker's target follows what its orders achieved: an order's fate moves it or leaves it, across restarts too.

The target moves with an order that executed or may still execute (filled, partly filled, open, acknowledged, or
unknown for now), and when there is nothing to trade because the holdings already are the target. It stays where it
was when the order was blocked by risk or never executed (rejected, cancelled before any fill), so the next candle
tries again if the model still wants it. An order whose outcome the broker could not tell yet is followed until it is
settled; after a crash between a decision and its order's outcome, the start-up looks at what the order became.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session, sessionmaker

from serving.market_state import MarketState
from serving.models import Decision, Order, table_of
from serving.orders import UNRESOLVABLE, OrderStatus, never_executed
from serving.repository import get_order

log = logging.getLogger(__name__)

# A decision's reason until its order's outcome is written: still this after a restart means the worker stopped in
# the middle of the order (`Worker.start` then finds out what became of it).
ORDER_UNDER_WAY = "order"


@dataclass(frozen=True)
class OrderResult:
    """What `serving.decisions.place_order` did: the order sent (or None: blocked, or nothing to trade), why, and
    its fate."""

    order_id: str | None
    reason: str
    sent_at: float | None = None  # when the request left for a networked venue
    status: OrderStatus | None = None
    filled: float = 0.0
    at_target: bool = False  # nothing to trade: the holdings already are the target


def follow_order(state: MarketState, target: float, result: OrderResult) -> None:
    """The target moves with an order that executed or may still execute, and when there was nothing to trade;
    it stays where it was when the order was blocked or never executed (rejected, cancelled unfilled), so the
    next decision tries again if the model still wants it."""
    if result.at_target:
        state.target = target
    elif result.order_id is not None and result.status is not None:
        if never_executed(result.status, result.filled):
            return
        if result.status in UNRESOLVABLE:
            state.in_flight = (result.order_id, state.target)
        state.target = target


def restore_interrupted_order(sessions: sessionmaker[Session], state: MarketState, decision: Decision) -> None:
    """The last run stopped between `decision` and its order's outcome (a crash): the target is what the order
    achieved, found after the start-up reconciliation. No order row: it never got as far as its intent. A row
    the exchange never executed: the target before it. A row still in flight: followed until it is settled."""
    before = decision.target - decision.delta
    with sessions() as session:
        order = session.scalar(select(Order).where(Order.decision_id == decision.id).limit(1))
        fate = None if order is None else (order.client_order_id, OrderStatus(order.status), order.filled)
    if fate is None:
        state.target, reason = before, "order not sent: the worker stopped before its intent"
    elif never_executed(fate[1], fate[2]):
        state.target, reason = before, f"order {fate[0]} {fate[1].value} (found at restart)"
    else:
        reason = f"order {fate[0]} {fate[1].value} (found at restart)"
        if fate[1] in UNRESOLVABLE:
            state.in_flight = (fate[0], before)
    log.warning("%s: the last run stopped during an order: %s; target %.2f", state.market, reason, state.target)
    update_reason(sessions, decision.id, reason, state.target)


def settle_in_flight(sessions: sessionmaker[Session], state: MarketState) -> None:
    """Once the broker (or reconciliation) has settled an order that was in flight: if it never executed,
    the target goes back to what it was before it."""
    if state.in_flight is None:
        return
    cid, before = state.in_flight
    with sessions() as session:
        order = get_order(session, cid)
        fate = None if order is None else (OrderStatus(order.status), order.filled)
    if fate is not None and fate[0] in UNRESOLVABLE:
        return
    state.in_flight = None
    if fate is None or never_executed(*fate):
        log.warning("%s: order %s never executed: target back to %.2f", state.market, cid, before)
        state.target = before


def update_reason(sessions: sessionmaker[Session], decision_id: int, reason: str, target: float) -> None:
    """Write a decision's final reason and target (once its order's fate is known)."""
    with sessions() as session:  # one UPDATE, no ORM load: it runs between two decisions
        session.connection().execute(
            _UPDATE_REASON, {"decision_id": decision_id, "new_reason": reason, "new_target": target}
        )
        session.commit()


_DECISIONS = table_of(Decision)
_UPDATE_REASON = (
    update(_DECISIONS)
    .where(_DECISIONS.c.id == bindparam("decision_id"))
    .values(reason=bindparam("new_reason"), target=bindparam("new_target"))
)
