"""The order state machine (pure): statuses, the legal transitions, and what a status says about an order's fate.

The write-ahead rule the states serve: an order is recorded as PENDING_SUBMIT and committed BEFORE it is sent
(`serving.repository.record_intent`). A crash between commit and answer leaves a PENDING_SUBMIT/UNKNOWN row whose
client order id the exchange knows too, so reconciliation can look it up instead of sending it twice.
"""

from __future__ import annotations

from enum import StrEnum

from cta.errors import CTAError


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
UNRESOLVABLE = frozenset({OrderStatus.PENDING_SUBMIT, OrderStatus.UNKNOWN})  # rows whose fate only a lookup can tell
FILL_TOLERANCE = 1e-9


class IllegalTransition(CTAError):
    """An order was asked to move to a state it cannot reach from its current one (a bug or a stale answer)."""

    def __init__(self, current: OrderStatus, new: OrderStatus) -> None:
        self.current = current
        self.new = new
        super().__init__(f"illegal order transition {current} -> {new}")


def transition(current: OrderStatus | str, new: OrderStatus | str) -> OrderStatus:
    """The state after `current` → `new`; the same state again is a no-op. Raises IllegalTransition otherwise."""
    current, new = OrderStatus(current), OrderStatus(new)
    if new == current or new in ALLOWED_TRANSITIONS[current]:
        return new
    raise IllegalTransition(current, new)


def reachable(current: OrderStatus | str, new: OrderStatus | str) -> bool:
    """Whether an order may move from `current` to `new` (not when it is already past what a late answer says)."""
    try:
        transition(current, new)
    except IllegalTransition:
        return False
    return True


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
