"""What the serving worker keeps per market between candles."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cta.lake import Market


@dataclass
class MarketState:
    """What the worker keeps per market between candles."""

    market: Market
    bar_ms: int
    candles: deque[list[Any]]  # the last candles, enough for every feature
    features: deque[np.ndarray]  # the last feature rows (model context), in `Worker.columns` order
    target: float = 0.0  # the position decided last whose order executed or may still (fraction of equity)
    # an order whose fate the broker could not tell yet: (client order id, the target before it); if it turns out
    # never to have executed, `target` goes back
    in_flight: tuple[str, float] | None = None
    model_position: float | None = None  # the model's last prediction (a stateful model continues from it)
    last_ts: int | None = None  # open time of the newest candle processed
    bars: int = 0  # candles processed since start
    peak_equity: float = 0.0
    day_open_equity: float = 0.0
    day: int = -1
    decisions: int = 0  # decisions and orders made since start
    orders: int = 0
    skipped: list[str] = field(default_factory=list)
