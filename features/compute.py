"""`compute_features`: THE feature function. Training, backtests and the serving worker all call it.

Pure: no I/O, no clock, no globals. Input: a candle frame (cta.candles schema) of one market, sorted
by time. Output: `ts` plus one float64 column per selected feature, for the rows after the warm-up
(row count = candles - warm-up). Gaps in the candles are not filled: windows count the bars that
exist, so a window spanning an exchange outage covers more wall time (documented in
docs/features.md); the lake reports every gap.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

from cta.candles import CANDLE_COLUMNS, CANDLE_DTYPES, normalize_candles
from cta.errors import DataValidationError
from features.indicators import Bars, Tail
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


def compute_newest(rows: Any, names: Sequence[str] | None = None) -> dict[str, float]:
    """The feature row of the LAST candle of `rows` ((ts, open, high, low, close, volume), oldest first,
    validated and increasing: the serving worker's tail), as {name: value}.

    Equal to `compute_features(rows).iloc[-1]` to float rounding (tests/features/test_newest.py, feature
    by feature), without computing the other rows: the worker's path per closed candle."""
    specs = select(tuple(names) if names is not None else None)
    needed = warmup_bars(specs) + 1
    if len(rows) < needed:
        raise InsufficientHistory(needed=needed, got=len(rows))
    tail = Tail.from_rows(rows[-needed:] if len(rows) > needed else rows)
    return {spec.name: float(spec.newest(tail)) for spec in specs}


def history_needed(names: Sequence[str] | None = None) -> int:
    """Candles needed to compute the features of the newest one (the serving worker's tail)."""
    return warmup_bars(select(tuple(names) if names is not None else None)) + 1
