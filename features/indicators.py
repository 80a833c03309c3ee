"""Vectorized indicator building blocks (pure; numpy/pandas; no loop per row).

Windows are counted in bars and look back only: the value at row t depends on rows <= t.
Exponential averages use a FINITE window of 4 spans (normalized exponential weights), so a value
never depends on history older than its window: features are then exactly reproducible from a
bounded tail of candles (what the serving worker has), instead of drifting with the start of the data.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

HOUR_MS = 3_600_000
DAY_MS = 86_400_000
_TINY = 1e-12


def _memo(store: dict[str, Any], key: str, compute: Callable[[], Any]) -> Any:
    if key not in store:
        store[key] = compute()
    return store[key]


@dataclass(frozen=True)
class Bars:
    """The columns features are computed from (float64 Series on a RangeIndex)."""

    ts: pd.Series
    open: pd.Series
    high: pd.Series
    low: pd.Series
    close: pd.Series
    volume: pd.Series
    _memo: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def memo(self, key: str, compute: Callable[[], Any]) -> Any:
        """Intermediate results shared by several features (e.g. the MACD line), computed once."""
        return _memo(self._memo, key, compute)

    @classmethod
    def from_candles(cls, candles: pd.DataFrame) -> Bars:
        frame = candles.reset_index(drop=True)
        return cls(*(frame[c] for c in ("ts", "open", "high", "low", "close", "volume")))

    @property
    def hour(self) -> pd.Series:
        return (self.ts // HOUR_MS) % 24

    @property
    def day_of_week(self) -> pd.Series:
        return (self.ts // DAY_MS + 3) % 7  # 1970-01-01 was a Thursday; Monday = 0


def log_return(close: pd.Series, bars: int) -> pd.Series:
    return np.log(close / close.shift(bars))


def realised_vol(close: pd.Series, bars: int) -> pd.Series:
    return log_return(close, 1).rolling(bars).std()


def ema_window(span: int) -> int:
    return 4 * span


def ema_warmup(span: int) -> int:
    return ema_window(span) - 1


def ewma(values: pd.Series, span: int) -> pd.Series:
    """Exponentially weighted mean (alpha = 2 / (span + 1)) over the last 4 * span bars only."""
    window = ema_window(span)
    alpha = 2.0 / (span + 1)
    weights = (1 - alpha) ** np.arange(window)
    weights /= weights.sum()
    data = values.to_numpy(dtype="float64")
    out = np.full(len(data), np.nan)
    if len(data) >= window:
        out[window - 1 :] = np.convolve(data, weights, mode="valid")
    return pd.Series(out, index=values.index)


def macd(close: pd.Series, fast: int, slow: int) -> pd.Series:
    """MACD line relative to close (scale-free)."""
    return (ewma(close, fast) - ewma(close, slow)) / close


def rsi(close: pd.Series, bars: int) -> pd.Series:
    """RSI with simple averages of gains and losses (Cutler); 50 when the window has no movement."""
    change = close.diff()
    gain = change.clip(lower=0).rolling(bars).mean()
    loss = (-change).clip(lower=0).rolling(bars).mean()
    total = gain + loss
    value = 100 * gain / total.where(total > _TINY)
    return value.where(total > _TINY, 50.0).where(total.notna())


def window_mean_std(values: pd.Series, bars: int, ddof: int = 0) -> tuple[pd.Series, pd.Series]:
    """Rolling mean and std, each window computed from its own values (two-pass, in chunks).

    pandas' online rolling variance carries rounding from older rows: on prices (large mean, small
    spread) a value then depends on where the series started, at ~1e-8 relative. Here a window's
    result depends on that window only, bit for bit.
    """
    data = values.to_numpy(dtype="float64")
    mean = np.full(len(data), np.nan)
    std = np.full(len(data), np.nan)
    chunk = 65_536
    for start in range(bars - 1, len(data), chunk):
        stop = min(start + chunk, len(data))
        windows = np.lib.stride_tricks.sliding_window_view(data[start + 1 - bars : stop], bars)
        window_mean = windows.mean(axis=1)
        mean[start:stop] = window_mean
        std[start:stop] = np.sqrt(((windows - window_mean[:, None]) ** 2).sum(axis=1) / (bars - ddof))
    return pd.Series(mean, index=values.index), pd.Series(std, index=values.index)


def bollinger_pctb(close: pd.Series, mean: pd.Series, std: pd.Series, width: float) -> pd.Series:
    """%b from a rolling mean and std: 0 at the lower band, 1 at the upper, 0.5 on a flat window."""
    band = 2 * width * std
    return ((close - (mean - width * std)) / band.where(band > 0)).where(band > 0, 0.5).where(mean.notna())


def bollinger_width(mean: pd.Series, std: pd.Series, width: float) -> pd.Series:
    return 2 * width * std / mean


def atr(high: pd.Series, low: pd.Series, close: pd.Series, bars: int) -> pd.Series:
    h, lo, c = (s.to_numpy(dtype="float64") for s in (high, low, close))
    previous = np.concatenate([[np.nan], c[:-1]])
    true_range = np.maximum(h - lo, np.maximum(np.abs(h - previous), np.abs(lo - previous)))
    return pd.Series(true_range, index=close.index).rolling(bars).mean()


def zscore(values: pd.Series, bars: int) -> pd.Series:
    mean, std = window_mean_std(values, bars, ddof=1)
    return ((values - mean) / std.where(std > 0)).where(std > 0, 0.0).where(mean.notna())


def ratio_to_mean(values: pd.Series, bars: int) -> pd.Series:
    mean = values.rolling(bars).mean()
    return (values / mean.where(mean > _TINY)).where(mean > _TINY, 1.0).where(mean.notna())


def cyclical(values: pd.Series, period: int, fn: Callable[[np.ndarray], np.ndarray]) -> pd.Series:
    return pd.Series(fn(2 * np.pi * values.to_numpy(dtype="float64") / period), index=values.index)


# --- the newest row only (the serving worker's path) -----------------------------------------------------------
# The same formulas on numpy arrays, computing the value of the LAST candle only: the worker needs one row per
# closed candle, and the pandas path above spends ~10 ms of Series overhead to produce a full column of it.
# Each function is held equal to its column form, feature by feature, by tests/features/test_newest.py.


@dataclass(frozen=True)
class Tail:
    """The newest candles of one market (oldest first) as float64 arrays; `ts` as int64."""

    ts: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    _memo: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def memo(self, key: str, compute: Callable[[], Any]) -> Any:
        return _memo(self._memo, key, compute)

    @classmethod
    def from_rows(cls, rows: Any) -> Tail:
        """From rows of (ts, open, high, low, close, volume)."""
        values = np.asarray(rows, dtype="float64")
        columns = [values[:, i].copy() for i in range(1, 6)]
        return cls(values[:, 0].astype("int64"), columns[0], columns[1], columns[2], columns[3], columns[4])

    @property
    def hour(self) -> float:
        return float((int(self.ts[-1]) // HOUR_MS) % 24)

    @property
    def day_of_week(self) -> float:
        return float((int(self.ts[-1]) // DAY_MS + 3) % 7)


def newest_log_return(close: np.ndarray, bars: int) -> float:
    return float(np.log(close[-1:] / close[-1 - bars : -bars])[0])


def newest_realised_vol(close: np.ndarray, bars: int) -> float:
    returns = np.log(close[-bars:] / close[-bars - 1 : -1])
    return float(np.std(returns, ddof=1))


def ewma_weights(span: int) -> np.ndarray:
    """The weights `ewma` applies, newest first."""
    alpha = 2.0 / (span + 1)
    weights: np.ndarray = (1 - alpha) ** np.arange(ema_window(span))
    normalized: np.ndarray = weights / weights.sum()
    return normalized


def newest_ewmas(values: np.ndarray, span: int, count: int) -> np.ndarray:
    """`ewma(values, span)` at the last `count` rows."""
    window = ema_window(span)
    windows = np.lib.stride_tricks.sliding_window_view(values[-(window + count - 1) :], window)
    return np.asarray(windows @ ewma_weights(span)[::-1])


def newest_macd_lines(close: np.ndarray, fast: int, slow: int, count: int) -> np.ndarray:
    """`macd(close, fast, slow)` at the last `count` rows."""
    lines: np.ndarray = (newest_ewmas(close, fast, count) - newest_ewmas(close, slow, count)) / close[-count:]
    return lines


def newest_rsi(close: np.ndarray, bars: int) -> float:
    change = np.diff(close[-bars - 1 :])
    gain = float(np.clip(change, 0, None).mean())
    loss = float(np.clip(-change, 0, None).mean())
    total = gain + loss
    return 100 * gain / total if total > _TINY else 50.0


def newest_mean_std(values: np.ndarray, bars: int, ddof: int = 0) -> tuple[float, float]:
    window = values[-bars:]
    mean = float(window.mean())
    return mean, float(np.sqrt(((window - mean) ** 2).sum() / (bars - ddof)))


def newest_bollinger_pctb(close: float, mean: float, std: float, width: float) -> float:
    band = 2 * width * std
    return (close - (mean - width * std)) / band if band > 0 else 0.5


def newest_atr(high: np.ndarray, low: np.ndarray, close: np.ndarray, bars: int) -> float:
    previous = close[-bars - 1 : -1]
    h, lo = high[-bars:], low[-bars:]
    true_range = np.maximum(h - lo, np.maximum(np.abs(h - previous), np.abs(lo - previous)))
    return float(true_range.mean())


def newest_zscore(values: np.ndarray, bars: int) -> float:
    mean, std = newest_mean_std(values, bars, ddof=1)
    return (float(values[-1]) - mean) / std if std > 0 else 0.0


def newest_ratio_to_mean(values: np.ndarray, bars: int) -> float:
    mean = float(values[-bars:].mean())
    return float(values[-1]) / mean if mean > _TINY else 1.0
