"""What trading costs (`CostModel`: fees and slippage, as fractions of traded notional) and what sizing
needs (`Sizing`). Apart from `cta.execution` (the compiled fill rules) so that the settings, and so every
command, import without numba."""

from __future__ import annotations

from typing import Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict, Field


class Sizing(Protocol):
    """How much of the equity a target of 1 puts to work, and the starting cash (`BacktestSettings` has both)."""

    @property
    def position_fraction(self) -> float: ...

    @property
    def initial_cash(self) -> float: ...


class CostModel(BaseModel):
    """Costs as fractions of traded notional: a taker fee per side plus slippage."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    taker_fee_rate: float = Field(default=0.001, ge=0, lt=0.1)
    maker_fee_rate: float = Field(default=0.001, ge=0, lt=0.1)
    slippage_bps: float = Field(default=2.0, ge=0, lt=1000)

    @property
    def cost_per_unit_turnover(self) -> float:
        """Fraction of equity lost per unit of position change (taker fill plus slippage)."""
        return self.taker_fee_rate + self.slippage_bps / 10_000

    def turnover_cost(self, positions: np.ndarray, initial: float = 0.0) -> np.ndarray:
        """Cost (fraction of equity) of moving into each position from the previous one."""
        previous = np.concatenate([[initial], positions[:-1]])
        cost: np.ndarray = np.abs(positions - previous) * self.cost_per_unit_turnover
        return cost

    def net_returns(self, positions: np.ndarray, next_returns: np.ndarray, initial: float = 0.0) -> np.ndarray:
        """Per-bar net simple returns of holding `positions[t]` over bar t+1 (its `next_returns[t]`),
        after paying for the position change at t."""
        net: np.ndarray = positions * next_returns - self.turnover_cost(positions, initial)
        return net
