"""Pre-trade risk checks: pure functions of an order, a snapshot of the world and the limits.

The worker builds a `RiskState` from what it knows at the candle close (equity, position, data and model
ages, the persisted kill switch), calls `check_order` for every `OrderRequest` and sends only allowed ones;
`should_halt` tells it when to persist HALTED. Nothing here reads a clock or a database: the same inputs give
the same verdict in the worker, in a backtest and in a test.

An order is an *exit* when it takes the position to zero, a *reduce* when it moves |position| towards zero
without reaching or crossing it, and an *entry* otherwise (opening, increasing, or flipping through zero).
Exits and reductions are never blocked except by HALTED: a limit that stopped a position from shrinking
would make the risk it guards against worse.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from cta.config import RiskSettings
from serving.control import TradingState
from serving.types import OrderRequest

OrderKind = Literal["entry", "exit", "reduce"]
# A position this close to zero (relative to the one before) counts as closed: float sizing leaves dust.
FLAT_TOLERANCE = 1e-9


@dataclass(frozen=True)
class RiskState:
    """What the checks need to know at the moment of the order (quote currency, base units, milliseconds).

    Ages are measured from the close of the candle they belong to; None means unknown, which blocks entries
    like a stale value would. `model_age_days` None means no model is known.
    """

    trading_state: TradingState
    equity: float
    day_open_equity: float
    peak_equity: float
    position_units: float  # signed: negative is short
    price: float  # the price notionals are valued at (the decision candle's close)
    candle_age_ms: float | None
    features_age_ms: float | None
    bar_ms: int
    model_age_days: float | None
    max_model_age_days: float


@dataclass(frozen=True)
class RiskVerdict:
    """Whether the order may be sent, why not (empty when allowed), and what kind of order it is."""

    allowed: bool
    reasons: tuple[str, ...]
    kind: OrderKind


def position_after(request: OrderRequest, units_before: float) -> float:
    """The signed position in base units once `request` has filled completely."""
    return units_before + request.amount if request.side == "buy" else units_before - request.amount


def classify(units_before: float, units_after: float) -> OrderKind:
    """Exit (to zero), reduce (towards zero, same side) or entry (opens, increases or flips)."""
    if units_before == 0.0:
        return "entry"
    if abs(units_after) <= FLAT_TOLERANCE * abs(units_before):
        return "exit"
    same_side = (units_after > 0) == (units_before > 0)
    return "reduce" if same_side and abs(units_after) < abs(units_before) else "entry"


def _is_positive(value: float) -> bool:
    return math.isfinite(value) and value > 0


def _fmt(value: float) -> str:
    return f"{value:,.2f}"


def drawdown_breached(state: RiskState, limits: RiskSettings) -> str | None:
    """The drawdown reason when equity is below peak * (1 - max_drawdown_halt), else None."""
    floor = state.peak_equity * (1.0 - limits.max_drawdown_halt)
    if _is_positive(state.peak_equity) and state.equity < floor:
        drawdown = 1.0 - state.equity / state.peak_equity
        return (
            f"drawdown {drawdown:.2%} from peak {_fmt(state.peak_equity)} exceeds the "
            f"{limits.max_drawdown_halt:.2%} halt limit (equity {_fmt(state.equity)} < {_fmt(floor)})"
        )
    return None


def daily_loss_breached(state: RiskState, limits: RiskSettings) -> str | None:
    """The daily loss reason when equity is below the day's open * (1 - daily_loss_limit), else None."""
    floor = state.day_open_equity * (1.0 - limits.daily_loss_limit)
    if _is_positive(state.day_open_equity) and state.equity < floor:
        loss = 1.0 - state.equity / state.day_open_equity
        return (
            f"daily loss {loss:.2%} from the day's open {_fmt(state.day_open_equity)} exceeds the "
            f"{limits.daily_loss_limit:.2%} limit (equity {_fmt(state.equity)} < {_fmt(floor)})"
        )
    return None


def staleness_reasons(state: RiskState, limits: RiskSettings) -> list[str]:
    """Why the candle, the features or the model are too old for new entries (empty when all are fresh)."""
    reasons: list[str] = []
    max_age_ms = limits.stale_after_bars * state.bar_ms
    for name, age in (("candle", state.candle_age_ms), ("features", state.features_age_ms)):
        if age is None:
            reasons.append(f"{name} age unknown")
        elif age > max_age_ms:
            reasons.append(
                f"{name} is stale: {age / 1000:.0f} s since the candle close > "
                f"{limits.stale_after_bars:g} bars ({max_age_ms / 1000:.0f} s)"
            )
    if state.model_age_days is None:
        reasons.append("no model version known")
    elif state.model_age_days > state.max_model_age_days:
        reasons.append(f"model is {state.model_age_days:.1f} days old > {state.max_model_age_days:g} days allowed")
    return reasons


def _entry_reasons(request: OrderRequest, state: RiskState, limits: RiskSettings, units_after: float) -> list[str]:
    """Every rule that blocks an entry (exits are exempt from all of them)."""
    reasons: list[str] = []
    if state.trading_state == TradingState.REDUCING:
        reasons.append("trading state is REDUCING: only exits and reductions are allowed")
    if not _is_positive(state.price):
        reasons.append(f"no valid price to value the order at ({state.price})")
    else:
        order_notional = request.amount * state.price
        if order_notional > limits.max_order_notional:
            reasons.append(f"order notional {_fmt(order_notional)} exceeds the limit {_fmt(limits.max_order_notional)}")
        position_notional = abs(units_after) * state.price
        if position_notional > limits.max_position_notional:
            reasons.append(
                f"position notional after the order {_fmt(position_notional)} exceeds the limit "
                f"{_fmt(limits.max_position_notional)}"
            )
    if not _is_positive(state.equity):
        reasons.append(f"equity {state.equity} is not positive")
    for breach in (daily_loss_breached(state, limits), drawdown_breached(state, limits)):
        if breach is not None:
            reasons.append(breach)
    reasons.extend(staleness_reasons(state, limits))
    return reasons


def check_order(request: OrderRequest, state: RiskState, limits: RiskSettings) -> RiskVerdict:
    """Whether `request` may be sent now, with every reason it may not (human-readable, with the numbers).

    HALTED blocks everything. Exits and reductions pass every other rule. Entries are blocked by REDUCING,
    the order and position notional limits, the daily loss limit, the drawdown limit, a stale candle or
    stale features, and an old (or unknown) model. A malformed amount is refused whatever the kind.
    """
    units_after = position_after(request, state.position_units)
    kind = classify(state.position_units, units_after)
    reasons: list[str] = []
    if not _is_positive(request.amount):
        reasons.append(f"order amount {request.amount} is not a positive number")
    if state.trading_state == TradingState.HALTED:
        reasons.append("trading state is HALTED: no orders are sent")
    elif kind == "entry":
        reasons.extend(_entry_reasons(request, state, limits, units_after))
    return RiskVerdict(allowed=not reasons, reasons=tuple(reasons), kind=kind)


def should_halt(state: RiskState, limits: RiskSettings) -> str | None:
    """The reason to persist HALTED (the drawdown limit is breached), None if not or if already HALTED."""
    if state.trading_state == TradingState.HALTED:
        return None
    return drawdown_breached(state, limits)
