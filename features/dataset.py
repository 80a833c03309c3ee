"""Training datasets: point-in-time features from Feast plus labels, time-ordered, one market."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from cta.errors import DataValidationError
from cta.lake import CandleLake, Market
from cta.timeframes import timeframe_ms
from features.labels import DIRECTION, FORWARD_RETURN, make_labels

if TYPE_CHECKING:
    from features.feast_store import FeatureStoreAdapter


@dataclass(frozen=True)
class Dataset:
    """Rows in time order. `X` holds the model inputs only (registry features, no labels)."""

    market: Market
    ts: np.ndarray  # candle open time, ms
    X: pd.DataFrame
    forward_return: np.ndarray  # label: log return over the horizon
    direction: np.ndarray  # label: -1 / 0 / +1
    next_return: np.ndarray  # simple return of the next bar (for position P&L and the RL reward)
    horizon: int
    lineage: dict[str, str] = field(default_factory=dict)  # lake month -> content hash

    def __len__(self) -> int:
        return len(self.ts)

    def take(self, index: np.ndarray) -> Dataset:
        return Dataset(
            self.market,
            self.ts[index],
            self.X.iloc[index].reset_index(drop=True),
            self.forward_return[index],
            self.direction[index],
            self.next_return[index],
            self.horizon,
            self.lineage,
        )


def assemble(
    market: Market,
    candles: pd.DataFrame,
    features: pd.DataFrame,
    *,
    horizon: int,
    dead_zone_bps: float,
    lineage: dict[str, str] | None = None,
) -> Dataset:
    """Join features (ts + feature columns) with labels on ts; drop rows without a label (the last
    `horizon` ones). Raises DataValidationError for a horizon longer than the data or a constant label."""
    if horizon >= len(candles):
        raise DataValidationError(f"{market}: label horizon {horizon} is longer than the {len(candles)} candles")
    labels = make_labels(candles, horizon, dead_zone_bps)
    close = candles["close"].to_numpy(dtype="float64")
    labels["next_return"] = np.append(close[1:] / close[:-1] - 1.0, np.nan)
    joined = features.merge(labels, on="ts", how="inner").dropna(subset=[FORWARD_RETURN, "next_return"])
    joined = joined.sort_values("ts").reset_index(drop=True)
    direction = joined[DIRECTION].astype("float64").to_numpy()
    if len(np.unique(direction)) < 2:
        raise DataValidationError(f"{market}: the direction label is constant; nothing to learn")
    inputs = joined.drop(columns=["ts", FORWARD_RETURN, DIRECTION, "next_return"])
    return Dataset(
        market,
        joined["ts"].to_numpy(),
        inputs.astype("float64"),
        joined[FORWARD_RETURN].to_numpy(),
        direction,
        joined["next_return"].to_numpy(),
        horizon,
        lineage or {},
    )


def from_feature_store(
    store: FeatureStoreAdapter,
    lake: CandleLake,
    market: Market,
    *,
    feature_names: list[str],
    horizon: int,
    dead_zone_bps: float,
) -> Dataset:
    """Point-in-time features from Feast for every candle close in the lake, plus labels."""
    snapshot = lake.snapshot(market)  # verified: a corrupt partition stops here, named
    candles = snapshot.candles
    close_time = pd.to_datetime(candles["ts"] + timeframe_ms(market.timeframe), unit="ms", utc=True)
    entity = pd.DataFrame({"market_id": str(market), "event_timestamp": close_time})
    historical = store.historical(entity, engine="asof")
    features = historical[feature_names].copy()
    features.insert(0, "ts", candles["ts"].to_numpy())
    features = features.dropna()
    return assemble(market, candles, features, horizon=horizon, dead_zone_bps=dead_zone_bps, lineage=snapshot.lineage)
