"""`compute_features`: THE feature function. Training, backtests and the serving worker all call it.

Pure: no I/O, no clock, no globals. Input: a candle frame (cta.candles schema) of one market, sorted
by time. Output: `ts` plus one float64 column per selected feature, for the rows after the warm-up
(row count = candles - warm-up). Gaps in the candles are not filled: windows count the bars that
exist, so a window spanning an exchange outage covers more wall time (documented in
docs/features.md); the lake reports every gap.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from cta.candles import normalize_candles
from cta.errors import DataValidationError
from features.indicators import Bars
from features.registry import select, warmup_bars


class InsufficientHistory(DataValidationError):
    def __init__(self, needed: int, got: int, market: str = "") -> None:
        self.needed, self.got = needed, got
        where = f"{market}: " if market else ""
        super().__init__(f"{where}{got} candles are too few for the features' warm-up: need at least {needed}")


def compute_features(candles: pd.DataFrame, names: Sequence[str] | None = None) -> pd.DataFrame:
    """Features of every candle after the warm-up. ValueError lists valid names for an unknown one."""
    specs = select(tuple(names) if names is not None else None)
    warmup = warmup_bars(specs)
    if len(candles) <= warmup:
        raise InsufficientHistory(needed=warmup + 1, got=len(candles))
    bars = Bars.from_candles(normalize_candles(candles))
    columns = {"ts": bars.ts} | {spec.name: spec.fn(bars).astype("float64") for spec in specs}
    return pd.DataFrame(columns).iloc[warmup:].reset_index(drop=True)


def history_needed(names: Sequence[str] | None = None) -> int:
    """Candles needed to compute the features of the newest one (the serving worker's tail)."""
    return warmup_bars(select(tuple(names) if names is not None else None)) + 1
