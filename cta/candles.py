"""The candle schema: one row per (exchange, symbol, timeframe, open time); only closed candles.

A candle frame is a pandas DataFrame with exactly CANDLE_COLUMNS, `ts` = UTC open time in epoch ms
(int64), prices and volume float64, sorted by ts with a RangeIndex.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

CANDLE_COLUMNS: tuple[str, ...] = ("ts", "open", "high", "low", "close", "volume")
PRICE_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close")
CANDLE_DTYPES: dict[str, str] = {
    "ts": "int64",
    "open": "float64",
    "high": "float64",
    "low": "float64",
    "close": "float64",
    "volume": "float64",
}


def empty_candles() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=t) for c, t in CANDLE_DTYPES.items()})


def candles_from_rows(rows: Iterable[Sequence[object]]) -> pd.DataFrame:
    """Build a candle frame from raw [ts, o, h, l, c, v] rows (e.g. ccxt's fetch_ohlcv).

    Values that are not numbers become NaN (they are caught by validation, not silently dropped);
    a ts that is not an integer becomes -1 for the same reason.
    """
    frame = pd.DataFrame([list(r)[:6] for r in rows], columns=list(CANDLE_COLUMNS))
    if frame.empty:
        return empty_candles()
    ts = pd.to_numeric(frame["ts"], errors="coerce")
    frame["ts"] = ts.where(ts.notna() & (ts == ts.round()), -1).astype("int64")
    for col in CANDLE_COLUMNS[1:]:
        frame[col] = pd.to_numeric(frame[col], errors="coerce").astype("float64")
    return frame


def normalize_candles(frame: pd.DataFrame) -> pd.DataFrame:
    """Exact columns and dtypes, sorted by ts, RangeIndex. Raises KeyError for a missing column."""
    out = frame.loc[:, list(CANDLE_COLUMNS)].astype(CANDLE_DTYPES)
    return out.sort_values("ts", kind="stable").reset_index(drop=True)


def content_hash(frame: pd.DataFrame) -> str:
    """sha256 of the candle values in canonical form: the same candles give the same hash anywhere."""
    canon = normalize_candles(frame)
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(canon["ts"].to_numpy(dtype="<i8")).tobytes())
    for col in CANDLE_COLUMNS[1:]:
        digest.update(np.ascontiguousarray(canon[col].to_numpy(dtype="<f8")).tobytes())
    return digest.hexdigest()


def symbol_to_path(symbol: str) -> str:
    """'BTC/USDT' -> 'BTC_USDT' (a safe path segment)."""
    return symbol.replace("/", "_").replace(":", "-")
