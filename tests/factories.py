"""Test data: real candles from the bundled slice, and builders for crafted ones."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from cta.candles import normalize_candles

BUNDLED = Path(__file__).resolve().parent.parent / "cta" / "data" / "candles"
HOUR_MS = 3_600_000


def real_candles(symbol: str = "BTCUSDT", timeframe: str = "1h", rows: int | None = None) -> pd.DataFrame:
    frame = pd.read_csv(BUNDLED / f"binance_{symbol}_{timeframe}.csv.gz").rename(columns={"timestamp": "ts"})
    frame = normalize_candles(frame)
    return frame.head(rows).reset_index(drop=True) if rows else frame


def candle_rows(start_ms: int, count: int, step_ms: int = HOUR_MS, price: float = 100.0) -> list[list[float]]:
    """Clean synthetic [ts, o, h, l, c, v] rows on the grid."""
    return [[start_ms + i * step_ms, price, price + 1, price - 1, price + 0.5, 10.0] for i in range(count)]
