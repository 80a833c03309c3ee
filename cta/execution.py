"""The one execution model: how an order is sized and filled (`Execution` and the compiled rules: fill price,
fee, units, liquidation equity), for the costs of `cta.costs.CostModel`.
Used by the RL environment, both backtest engines and the serving worker's paper broker and sizing.

Rules: a change of target is a market order at the next bar's open; the fill price is open x (1 +
slippage) for a buy, x (1 - slippage) for a sell; the fee is a share (taker rate) of the fill's
notional; the size is target x sizing fraction x the equity left if the current position were closed
at that open, divided by the worst-case cost of one unit, shaved by one part in 1e9 so that an all-in
buy plus its fee always fits in the cash.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba

from cta.costs import CostModel, Sizing

SIZE_HAIRCUT = 1e-9


@dataclass(frozen=True)
class Execution:
    """The execution parameters both engines use, as plain floats."""

    fee_rate: float
    slippage: float  # fraction of price
    position_fraction: float  # share of equity behind a target of 1
    initial_cash: float

    @classmethod
    def from_settings(cls, costs: CostModel, backtest: Sizing) -> Execution:
        return cls(costs.taker_fee_rate, costs.slippage_bps / 10_000, backtest.position_fraction, backtest.initial_cash)


@numba.njit(cache=True)
def order_units(target: float, equity: float, open_price: float, slippage: float, fee_rate: float) -> float:
    """Units to hold after executing `target` (already scaled by the sizing fraction) at this open."""
    if target == 0.0:
        return 0.0
    return target * equity * (1.0 - SIZE_HAIRCUT) / (open_price * (1.0 + slippage) * (1.0 + fee_rate))


@numba.njit(cache=True)
def fill_price(open_price: float, units: float, slippage: float) -> float:
    return open_price * (1.0 + slippage) if units > 0.0 else open_price * (1.0 - slippage)


@numba.njit(cache=True)
def fill_fee(units: float, price: float, fee_rate: float) -> float:
    return abs(units) * fee_rate * price


@numba.njit(cache=True)
def liquidation_equity(cash: float, held: float, open_price: float, slippage: float, fee_rate: float) -> float:
    """Cash after closing `held` units at this open, slippage and fee included: what an order may size
    from (so a reversal still fits in the cash once the old position is closed)."""
    if held == 0.0:
        return cash
    price = fill_price(open_price, -held, slippage)
    return cash + held * price - fill_fee(held, price, fee_rate)


def warm_execution_rules() -> None:
    """Load the compiled execution rules now (~0.8 s the first time in a process: numba's typing machinery),
    so that a serving worker's first order does not pay it (it did: 0.25-0.8 s)."""
    units = order_units(1.0, 1_000.0, 100.0, 0.0, 0.0)
    liquidation_equity(1_000.0, units, 100.0, 0.0, 0.0)
    fill_fee(units, fill_price(100.0, units, 0.0), 0.0)
