"""Test data: real candles from the bundled slice, and builders for crafted ones."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cta.candles import normalize_candles

BUNDLED = Path(__file__).resolve().parent.parent / "cta" / "data" / "candles"
HOUR_MS = 3_600_000
# A gate every candidate passes (tests of the promotion mechanics, not of the thresholds).
LAX_GATE = {
    "min_sharpe": -100.0,
    "max_drawdown": 1.0,
    "min_trades": 0,
    "must_beat": [],
    "champion_margin": 0.0,
    "min_deflated_sharpe": 0.0,
}


def real_candles(symbol: str = "BTCUSDT", timeframe: str = "1h", rows: int | None = None) -> pd.DataFrame:
    frame = pd.read_csv(BUNDLED / f"binance_{symbol}_{timeframe}.csv.gz").rename(columns={"timestamp": "ts"})
    frame = normalize_candles(frame)
    return frame.head(rows).reset_index(drop=True) if rows else frame


def candle_rows(start_ms: int, count: int, step_ms: int = HOUR_MS, price: float = 100.0) -> list[list[float]]:
    """Clean synthetic [ts, o, h, l, c, v] rows on the grid."""
    return [[start_ms + i * step_ms, price, price + 1, price - 1, price + 0.5, 10.0] for i in range(count)]


def training_data(symbol: str = "BTCUSDT", rows: int = 3000, horizon: int = 4, folds: int = 3) -> Any:
    """A TrainingData on real candles (features from compute_features, labels, purged splits)."""
    from cta.config import TrainingSettings
    from cta.lake import Market
    from features.compute import compute_features
    from features.dataset import assemble
    from training.candidate import TrainingData
    from training.splits import train_validation_oos, walk_forward_folds

    settings = TrainingSettings()
    candles = real_candles(symbol, "1h", rows=rows)
    market = Market("binance", f"{symbol[:-4]}/{symbol[-4:]}", "1h")
    dataset = assemble(
        market,
        candles,
        compute_features(candles),
        horizon=horizon,
        dead_zone_bps=10.0,
        lineage={"test": "real-candles"},
    )
    split = train_validation_oos(len(dataset), settings.validation_fraction, settings.out_of_sample_fraction, horizon)
    development = dataset.take(np.arange(split.validation[-1] + 1))
    return TrainingData(
        development=development,
        folds=walk_forward_folds(len(development), folds, min_train=len(development) // 3, horizon=horizon),
        train=dataset.take(split.train),
        validation=dataset.take(split.validation),
    )
