"""The model contract: every candidate, whatever its library, is an MLflow pyfunc whose
`predict(features)` returns one target position in [-1, 1] per input row (rows in time order; a
model that needs history reads it from the preceding rows, and rows without enough history get 0).
Backtests and the worker never branch on model family.

Classifier scores become positions through a threshold policy fitted on the validation block (net
of costs) and stored in the model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cta.costs import CostModel

POSITION = "position"
HISTORY_ROWS = "history_rows"  # model metadata: rows of context a prediction needs (1 = one row)


@dataclass(frozen=True)
class ThresholdPolicy:
    """score in [-1, 1] (e.g. P(up) - P(down)) -> long above `long_above`, short below `short_below`."""

    long_above: float
    short_below: float

    def positions(self, score: np.ndarray) -> np.ndarray:
        out = np.zeros(len(score), dtype="float64")
        out[score > self.long_above] = 1.0
        out[score < self.short_below] = -1.0
        return out


FLAT = ThresholdPolicy(long_above=np.inf, short_below=-np.inf)


def fit_threshold_policy(
    score: np.ndarray, next_return: np.ndarray, costs: CostModel, grid: np.ndarray | None = None
) -> ThresholdPolicy:
    """The symmetric threshold with the best net return on validation; flat if none beats doing nothing."""
    grid = np.linspace(0.0, 0.9, 19) if grid is None else grid
    best, best_total = FLAT, 0.0
    for threshold in grid:
        policy = ThresholdPolicy(long_above=float(threshold), short_below=-float(threshold))
        total = float(costs.net_returns(policy.positions(score), next_return).sum())
        if total > best_total:
            best, best_total = policy, total
    return best
