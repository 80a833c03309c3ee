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

from cta.candles import CANDLE_COLUMNS, CANDLE_DTYPES, normalize_candles
from cta.errors import DataValidationError
from features.indicators import Bars
from features.registry import select, warmup_bars

_CANDLE_DTYPES = [CANDLE_DTYPES[c] for c in CANDLE_COLUMNS]


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
    if not candles["ts"].is_monotonic_increasing or list(candles.dtypes.astype(str)) != _CANDLE_DTYPES:
        candles = normalize_candles(candles)
    bars = Bars.from_candles(candles)
    columns = {"ts": bars.ts.to_numpy()[warmup:]}
    for spec in specs:
        columns[spec.name] = spec.fn(bars).to_numpy(dtype="float64")[warmup:]
    return pd.DataFrame(columns)


def history_needed(names: Sequence[str] | None = None) -> int:
    """Candles needed to compute the features of the newest one (the serving worker's tail)."""
    return warmup_bars(select(tuple(names) if names is not None else None)) + 1
