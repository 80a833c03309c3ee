"""The feature registry: the one list of features. Feast's schema, the GX "features" suite and the
training columns are all derived from it.

Every feature is a pure function of the candles up to and including its row (no look-ahead),
with windows counted in bars of the stored series. `warmup` is the number of leading rows whose
value is not yet valid (they are dropped by `compute_features`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from features import indicators as ind

FeatureFn = Callable[[ind.Bars], pd.Series]
NewestFn = Callable[[ind.Tail], float]


@dataclass(frozen=True)
class FeatureSpec:
    name: str
    dtype: Literal["float64"]
    version: int
    warmup: int  # leading bars without a valid value
    description: str
    fn: FeatureFn  # the column, for training and backtests
    newest: NewestFn  # the same value for the newest candle only, for the serving worker (held equal by tests)
    lower: float | None = None  # known bounds, checked by the "features" gate
    upper: float | None = None


def _spec(
    name: str,
    warmup: int,
    description: str,
    fn: FeatureFn,
    newest: NewestFn,
    *,
    lower: float | None = None,
    upper: float | None = None,
    version: int = 1,
) -> FeatureSpec:
    return FeatureSpec(name, "float64", version, warmup, description, fn, newest, lower, upper)


MACD_FAST, MACD_SLOW, MACD_SIGNAL = 12, 26, 9


def _macd_line(b: ind.Bars) -> pd.Series:
    line: pd.Series = b.memo("macd", lambda: ind.macd(b.close, MACD_FAST, MACD_SLOW))
    return line


def _macd_signal(b: ind.Bars) -> pd.Series:
    signal: pd.Series = b.memo("macd_signal", lambda: ind.ewma(_macd_line(b), MACD_SIGNAL))
    return signal


def _bollinger_20(b: ind.Bars) -> tuple[pd.Series, pd.Series]:
    mean_std: tuple[pd.Series, pd.Series] = b.memo("bollinger_20", lambda: ind.window_mean_std(b.close, 20))
    return mean_std


def _newest_macd_lines(t: ind.Tail) -> np.ndarray:
    """The MACD line at the last MACD_SIGNAL-window rows (what the newest signal averages)."""
    lines: np.ndarray = t.memo(
        "macd", lambda: ind.newest_macd_lines(t.close, MACD_FAST, MACD_SLOW, ind.ema_window(MACD_SIGNAL))
    )
    return lines


def _newest_macd_signal(t: ind.Tail) -> float:
    signal: float = t.memo("macd_signal", lambda: float(_newest_macd_lines(t) @ ind.ewma_weights(MACD_SIGNAL)[::-1]))
    return signal


def _newest_bollinger_20(t: ind.Tail) -> tuple[float, float]:
    mean_std: tuple[float, float] = t.memo("bollinger_20", lambda: ind.newest_mean_std(t.close, 20))
    return mean_std


def _newest_bollinger_width(t: ind.Tail, width: float) -> float:
    mean, std = _newest_bollinger_20(t)
    return 2 * width * std / mean


FEATURES: tuple[FeatureSpec, ...] = (
    _spec(
        "ret_1",
        1,
        "log return over 1 bar",
        lambda b: ind.log_return(b.close, 1),
        lambda t: ind.newest_log_return(t.close, 1),
    ),
    _spec(
        "ret_4",
        4,
        "log return over 4 bars",
        lambda b: ind.log_return(b.close, 4),
        lambda t: ind.newest_log_return(t.close, 4),
    ),
    _spec(
        "ret_12",
        12,
        "log return over 12 bars",
        lambda b: ind.log_return(b.close, 12),
        lambda t: ind.newest_log_return(t.close, 12),
    ),
    _spec(
        "ret_24",
        24,
        "log return over 24 bars",
        lambda b: ind.log_return(b.close, 24),
        lambda t: ind.newest_log_return(t.close, 24),
    ),
    _spec(
        "vol_24",
        24,
        "realised volatility: std of 1-bar log returns over 24 bars",
        lambda b: ind.realised_vol(b.close, 24),
        lambda t: ind.newest_realised_vol(t.close, 24),
        lower=0,
    ),
    _spec(
        "vol_72",
        72,
        "realised volatility: std of 1-bar log returns over 72 bars",
        lambda b: ind.realised_vol(b.close, 72),
        lambda t: ind.newest_realised_vol(t.close, 72),
        lower=0,
    ),
    _spec(
        "rsi_14",
        14,
        "RSI over 14 bars (simple averages of gains and losses), 0..100",
        lambda b: ind.rsi(b.close, 14),
        lambda t: ind.newest_rsi(t.close, 14),
        lower=0,
        upper=100,
    ),
    _spec(
        "macd",
        ind.ema_warmup(MACD_SLOW),
        "MACD line (EMA12 - EMA26) relative to close",
        _macd_line,
        lambda t: float(_newest_macd_lines(t)[-1]),
    ),
    _spec(
        "macd_signal",
        ind.ema_warmup(MACD_SLOW) + ind.ema_warmup(MACD_SIGNAL),
        "EMA9 of the relative MACD line",
        _macd_signal,
        _newest_macd_signal,
    ),
    _spec(
        "macd_hist",
        ind.ema_warmup(MACD_SLOW) + ind.ema_warmup(MACD_SIGNAL),
        "relative MACD line minus its signal",
        lambda b: _macd_line(b) - _macd_signal(b),
        lambda t: float(_newest_macd_lines(t)[-1]) - _newest_macd_signal(t),
    ),
    _spec(
        "bb_pctb_20",
        19,
        "Bollinger %b (20 bars, 2 std): 0 at the lower band, 1 at the upper",
        lambda b: ind.bollinger_pctb(b.close, *_bollinger_20(b), 2.0),
        lambda t: ind.newest_bollinger_pctb(float(t.close[-1]), *_newest_bollinger_20(t), 2.0),
    ),
    _spec(
        "bb_width_20",
        19,
        "Bollinger band width (20 bars, 2 std) relative to the mean",
        lambda b: ind.bollinger_width(*_bollinger_20(b), 2.0),
        lambda t: _newest_bollinger_width(t, 2.0),
        lower=0,
    ),
    _spec(
        "atr_14_rel",
        14,
        "average true range over 14 bars relative to close",
        lambda b: ind.atr(b.high, b.low, b.close, 14) / b.close,
        lambda t: ind.newest_atr(t.high, t.low, t.close, 14) / float(t.close[-1]),
        lower=0,
    ),
    _spec(
        "volume_z_24",
        23,
        "z-score of volume against the last 24 bars (0 when volume is constant)",
        lambda b: ind.zscore(b.volume, 24),
        lambda t: ind.newest_zscore(t.volume, 24),
    ),
    _spec(
        "volume_ratio_24",
        23,
        "volume relative to its 24-bar mean (1 when that mean is 0)",
        lambda b: ind.ratio_to_mean(b.volume, 24),
        lambda t: ind.newest_ratio_to_mean(t.volume, 24),
        lower=0,
    ),
    _spec(
        "hl_range",
        0,
        "(high - low) / close",
        lambda b: (b.high - b.low) / b.close,
        lambda t: float((t.high[-1] - t.low[-1]) / t.close[-1]),
        lower=0,
    ),
    _spec(
        "oc_body",
        0,
        "(close - open) / open",
        lambda b: (b.close - b.open) / b.open,
        lambda t: float((t.close[-1] - t.open[-1]) / t.open[-1]),
    ),
    _spec(
        "upper_wick",
        0,
        "(high - max(open, close)) / close",
        lambda b: (b.high - np.maximum(b.open, b.close)) / b.close,
        lambda t: float((t.high[-1] - max(t.open[-1], t.close[-1])) / t.close[-1]),
        lower=0,
    ),
    _spec(
        "lower_wick",
        0,
        "(min(open, close) - low) / close",
        lambda b: (np.minimum(b.open, b.close) - b.low) / b.close,
        lambda t: float((min(t.open[-1], t.close[-1]) - t.low[-1]) / t.close[-1]),
        lower=0,
    ),
    _spec(
        "dist_high_24",
        23,
        "close relative to the highest high of the last 24 bars, minus 1",
        lambda b: b.close / b.high.rolling(24).max() - 1,
        lambda t: float(t.close[-1] / t.high[-24:].max() - 1),
        upper=0,
    ),
    _spec(
        "dist_low_24",
        23,
        "close relative to the lowest low of the last 24 bars, minus 1",
        lambda b: b.close / b.low.rolling(24).min() - 1,
        lambda t: float(t.close[-1] / t.low[-24:].min() - 1),
        lower=0,
    ),
    _spec(
        "dist_high_168",
        167,
        "close relative to the highest high of the last 168 bars, minus 1",
        lambda b: b.close / b.high.rolling(168).max() - 1,
        lambda t: float(t.close[-1] / t.high[-168:].max() - 1),
        upper=0,
    ),
    _spec(
        "dist_low_168",
        167,
        "close relative to the lowest low of the last 168 bars, minus 1",
        lambda b: b.close / b.low.rolling(168).min() - 1,
        lambda t: float(t.close[-1] / t.low[-168:].min() - 1),
        lower=0,
    ),
    _spec(
        "sma_ratio_24_168",
        167,
        "24-bar mean close over 168-bar mean close, minus 1",
        lambda b: b.close.rolling(24).mean() / b.close.rolling(168).mean() - 1,
        lambda t: float(t.close[-24:].mean() / t.close[-168:].mean() - 1),
    ),
    _spec(
        "hour_sin",
        0,
        "sine of the UTC hour of the candle's open",
        lambda b: ind.cyclical(b.hour, 24, np.sin),
        lambda t: float(np.sin(2 * np.pi * t.hour / 24)),
        lower=-1,
        upper=1,
    ),
    _spec(
        "hour_cos",
        0,
        "cosine of the UTC hour of the candle's open",
        lambda b: ind.cyclical(b.hour, 24, np.cos),
        lambda t: float(np.cos(2 * np.pi * t.hour / 24)),
        lower=-1,
        upper=1,
    ),
    _spec(
        "dow_sin",
        0,
        "sine of the UTC day of week of the candle's open",
        lambda b: ind.cyclical(b.day_of_week, 7, np.sin),
        lambda t: float(np.sin(2 * np.pi * t.day_of_week / 7)),
        lower=-1,
        upper=1,
    ),
    _spec(
        "dow_cos",
        0,
        "cosine of the UTC day of week of the candle's open",
        lambda b: ind.cyclical(b.day_of_week, 7, np.cos),
        lambda t: float(np.cos(2 * np.pi * t.day_of_week / 7)),
        lower=-1,
        upper=1,
    ),
)

_BY_NAME = {spec.name: spec for spec in FEATURES}


def feature_names() -> list[str]:
    return [spec.name for spec in FEATURES]


def select(names: list[str] | tuple[str, ...] | None = None) -> tuple[FeatureSpec, ...]:
    """The specs for `names` (all when None), in registry order; ValueError listing the valid names."""
    if names is None:
        return FEATURES
    unknown = [n for n in names if n not in _BY_NAME]
    if unknown:
        raise ValueError(f"unknown feature(s) {unknown}; valid names: {', '.join(feature_names())}")
    wanted = set(names)
    return tuple(spec for spec in FEATURES if spec.name in wanted)


def warmup_bars(specs: tuple[FeatureSpec, ...] = FEATURES) -> int:
    return max((spec.warmup for spec in specs), default=0)


def registry_version(specs: tuple[FeatureSpec, ...] = FEATURES) -> str:
    """A short hash of the feature set (names, dtypes, versions, warm-ups): logged for lineage, and
    the name of the Feast FeatureService that pins it."""
    canonical = json.dumps([[s.name, s.dtype, s.version, s.warmup] for s in specs], separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]
