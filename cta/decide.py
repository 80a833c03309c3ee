"""`decide()`: a model's target position -> an order intent. One pure function, used by the
vectorized backtest, the backtrader strategy and the serving worker alike."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, ConfigDict, Field


class Limits(BaseModel):
    """What a decision may do. Positions are fractions of equity (1 = all-in long)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_position: float = Field(default=1.0, gt=0, le=1.0)  # |target| is capped here
    min_trade: float = Field(default=0.05, ge=0, le=1.0)  # smaller changes are churn: not traded
    allow_short: bool = True


@dataclass(frozen=True)
class OrderIntent:
    target: float  # the position after the order (== current position when there is no order)
    delta: float  # target - current; 0.0 means "no order"

    @property
    def is_order(self) -> bool:
        return self.delta != 0.0


def decide(prediction: float, position: float, limits: Limits) -> OrderIntent:
    """Clip the prediction to the limits; skip changes smaller than `min_trade` (no churn), except a
    move to exactly flat, which is always allowed (exits are never blocked). A prediction that is not
    a finite number makes no order."""
    if not math.isfinite(prediction):
        return OrderIntent(position, 0.0)
    floor = -limits.max_position if limits.allow_short else 0.0
    target = min(max(prediction, floor), limits.max_position)
    delta = target - position
    if delta == 0.0 or (abs(delta) < limits.min_trade and target != 0.0):
        return OrderIntent(position, 0.0)
    return OrderIntent(target, delta)


def decide_path(predictions: np.ndarray, limits: Limits, initial: float = 0.0) -> np.ndarray:
    """The position after each bar's decision, applying `decide` bar by bar (the no-churn rule makes
    the path depend on the position held)."""
    positions = np.empty(len(predictions), dtype="float64")
    position = initial
    for i, prediction in enumerate(predictions.tolist()):
        position = decide(prediction, position, limits).target
        positions[i] = position
    return positions
