"""Labels: the ONLY code that looks forward. Never among the model inputs (their names say so)."""

from __future__ import annotations

import numpy as np
import pandas as pd

LABEL_PREFIX = "label_"
FORWARD_RETURN = f"{LABEL_PREFIX}fwd_ret"
DIRECTION = f"{LABEL_PREFIX}direction"


def forward_log_return(close: pd.Series, horizon: int) -> pd.Series:
    """log(close[t + horizon] / close[t]); NaN for the last `horizon` rows."""
    if horizon < 1:
        raise ValueError(f"label horizon must be >= 1 bar, got {horizon}")
    return np.log(close.shift(-horizon) / close)


def direction(forward_return: pd.Series, dead_zone: float) -> pd.Series:
    """+1 above the dead zone, -1 below its negative, 0 inside (moves too small to pay fees);
    missing where the forward return is."""
    values = np.select([forward_return > dead_zone, forward_return < -dead_zone], [1.0, -1.0], 0.0)
    return pd.Series(values, index=forward_return.index).where(forward_return.notna()).astype("Float64")


def make_labels(candles: pd.DataFrame, horizon: int, dead_zone_bps: float) -> pd.DataFrame:
    """`ts`, the forward log return over `horizon` bars and its direction class (dead zone in bps)."""
    frame = candles.reset_index(drop=True)
    fwd = forward_log_return(frame["close"].astype("float64"), horizon)
    return pd.DataFrame({"ts": frame["ts"], FORWARD_RETURN: fwd, DIRECTION: direction(fwd, dead_zone_bps / 10_000)})
