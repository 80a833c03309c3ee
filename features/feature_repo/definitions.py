"""Feast definitions for `feast -c features/feature_repo ...` (`feast apply` imports every .py file
here, so this file only builds the objects from the feature registry, via features/feast_store.py)."""

from features.feast_objects import build_objects

_objects = build_objects()  # the offline source path is relative to this folder: ../../data/features
market = _objects.entity
candle_features_source = _objects.batch_source
candle_features_push = _objects.push_source
candle_features = _objects.feature_view
candle_features_service = _objects.feature_service

__all__ = ["candle_features", "candle_features_push", "candle_features_service", "candle_features_source", "market"]
