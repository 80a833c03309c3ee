"""Feast definitions for `feast -c features/feature_repo ...`: imports only; the objects are built from
the feature registry in features/feast_store.py (`feast apply` imports every .py file here)."""

from features.feast_store import (
    candle_features,
    candle_features_push,
    candle_features_service,
    candle_features_source,
    market,
)

__all__ = ["candle_features", "candle_features_push", "candle_features_service", "candle_features_source", "market"]
