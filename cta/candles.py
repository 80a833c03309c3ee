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


# Plausible candle open times: 2000-01-01 (no crypto venue has candles before it) to 2100-01-01.
MIN_TS_MS = 946_684_800_000
MAX_TS_MS = 4_102_444_800_000
# The same window in the units a wrong source uses instead of epoch ms. The windows do not overlap, so a
# timestamp inside one of them is that unit's time, not a millisecond one.
_UNIT_FACTORS: dict[str, float] = {"s": 1e-3, "us": 1e3, "ns": 1e6}
UNIT_NAMES: dict[str, str] = {"s": "seconds", "us": "microseconds", "ns": "nanoseconds"}


def timestamp_units(ts: pd.Series | np.ndarray) -> np.ndarray:
    """Per timestamp: "ms" if plausible as epoch milliseconds, "s"/"us"/"ns" if it is only plausible in that
    unit (e.g. 1640995200 is 2022-01-01 in seconds, 1970-01-19 in ms), "" if plausible in none."""
    values = np.asarray(ts, dtype="float64")
    units = np.full(values.shape, "", dtype=object)
    units[(values >= MIN_TS_MS) & (values < MAX_TS_MS)] = "ms"
    for unit, factor in _UNIT_FACTORS.items():
        units[(values >= MIN_TS_MS * factor) & (values < MAX_TS_MS * factor)] = unit
    return units


def wrong_unit_note(ts: int) -> str | None:
    """'1640995200 looks like epoch seconds (2022-01-01T00:00Z), not milliseconds', or None when `ts` is not
    plausible in another unit."""
    unit = str(timestamp_units(np.array([ts]))[0])
    if unit in ("", "ms"):
        return None
    when = pd.Timestamp(int(ts / _UNIT_FACTORS[unit]), unit="ms", tz="UTC").strftime("%Y-%m-%dT%H:%MZ")
    return f"{ts} looks like epoch {UNIT_NAMES[unit]} ({when}), not milliseconds"


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
    """Exact columns and dtypes, sorted by ts, RangeIndex. Raises KeyError for a missing column.
    A frame already in that form (e.g. a lake partition as written) is returned as it is, not copied."""
    if _is_canonical(frame):
        return frame
    out = frame.loc[:, list(CANDLE_COLUMNS)].astype(CANDLE_DTYPES)
    return out.sort_values("ts", kind="stable").reset_index(drop=True)


def _is_canonical(frame: pd.DataFrame) -> bool:
    return (
        tuple(frame.columns) == CANDLE_COLUMNS
        and all(str(frame[c].dtype) == t for c, t in CANDLE_DTYPES.items())
        and isinstance(frame.index, pd.RangeIndex)
        and frame.index.start == 0
        and frame.index.step == 1
        and bool(frame["ts"].is_monotonic_increasing)
    )


def content_hash(frame: pd.DataFrame, *, normalized: bool = False) -> str:
    """sha256 of the candle values in canonical form: the same candles give the same hash anywhere.
    `normalized=True` skips the canonicalisation for a frame that is already a normalize_candles() result."""
    canon = frame if normalized else normalize_candles(frame)
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(canon["ts"].to_numpy(dtype="<i8")).tobytes())
    for col in CANDLE_COLUMNS[1:]:
        digest.update(np.ascontiguousarray(canon[col].to_numpy(dtype="<f8")).tobytes())
    return digest.hexdigest()


def symbol_to_path(symbol: str) -> str:
    """'BTC/USDT' -> 'BTC_USDT' (a safe path segment)."""
    return symbol.replace("/", "_").replace(":", "-")
