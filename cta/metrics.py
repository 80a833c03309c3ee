"""The definitions of a curve's per-bar returns and its maximum drawdown (pure numpy), in core: the backtests
(`backtests.metrics`, which also has compiled passes tested equal to these) and champion monitoring
(`cta.monitor`, for the serving worker) use the same ones."""

from __future__ import annotations

import numpy as np


def bar_returns(equity: np.ndarray) -> np.ndarray:
    return np.asarray(equity[1:] / equity[:-1] - 1.0, dtype="float64")


def max_drawdown(equity: np.ndarray) -> float:
    """Largest peak-to-trough fall, as a positive fraction (0.25 = -25 %)."""
    peaks = np.maximum.accumulate(equity)
    return float(np.max(1.0 - equity / peaks)) if len(equity) else 0.0
