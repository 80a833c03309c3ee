from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from features.compute import InsufficientHistory, compute_features
from features.labels import DIRECTION, FORWARD_RETURN, LABEL_PREFIX, make_labels
from features.registry import FEATURES, feature_names, registry_version, select, warmup_bars
from tests.factories import real_candles

PRICE_SCALE_FREE = [s.name for s in FEATURES if not s.name.startswith("volume")]


def test_registry_is_complete_and_consistent() -> None:
    names = feature_names()
    assert len(names) >= 20 and len(set(names)) == len(names)
    for spec in FEATURES:
        assert spec.dtype == "float64" and spec.version >= 1 and spec.warmup >= 0 and spec.description
        assert not spec.name.startswith(LABEL_PREFIX)


def test_registry_version_changes_with_the_feature_set() -> None:
    assert registry_version() == registry_version(FEATURES)
    bumped = tuple(dataclasses.replace(s, version=s.version + 1) if s.name == "rsi_14" else s for s in FEATURES)
    assert registry_version(bumped) != registry_version()
    assert registry_version(select(["ret_1", "rsi_14"])) != registry_version()


def test_unknown_feature_names_list_the_valid_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown feature.*'nope'.*valid names: ret_1, ret_4"):
        compute_features(real_candles(rows=300), names=["ret_1", "nope"])


def test_a_subset_needs_only_its_own_warmup() -> None:
    frame = compute_features(real_candles(rows=300), names=["ret_4", "hl_range"])
    assert list(frame.columns) == ["ts", "ret_4", "hl_range"] and len(frame) == 296


def test_too_little_history_names_the_bars_needed() -> None:
    with pytest.raises(InsufficientHistory, match=f"need at least {warmup_bars() + 1}"):
        compute_features(real_candles(rows=warmup_bars()))


def test_features_are_invariant_to_the_price_scale() -> None:
    candles = real_candles(rows=1000)
    scaled = candles.copy()
    scaled[["open", "high", "low", "close"]] *= 1000.0
    a, b = compute_features(candles), compute_features(scaled)
    np.testing.assert_allclose(a[PRICE_SCALE_FREE].to_numpy(), b[PRICE_SCALE_FREE].to_numpy(), rtol=1e-9, atol=1e-12)


def test_labels_look_forward_and_are_never_inputs() -> None:
    candles = real_candles(rows=400)
    labels = make_labels(candles, horizon=4, dead_zone_bps=20)
    assert [c for c in labels.columns if c != "ts"] == [FORWARD_RETURN, DIRECTION]
    close = candles["close"].to_numpy()
    np.testing.assert_allclose(labels[FORWARD_RETURN].iloc[:-4], np.log(close[4:] / close[:-4]))
    assert labels[FORWARD_RETURN].iloc[-4:].isna().all() and labels[DIRECTION].iloc[-4:].isna().all()
    fwd = labels[FORWARD_RETURN].iloc[:-4]
    expected = np.where(fwd > 0.002, 1, np.where(fwd < -0.002, -1, 0))
    np.testing.assert_array_equal(labels[DIRECTION].iloc[:-4].astype(int).to_numpy(), expected)
    assert not [c for c in compute_features(candles).columns if c.startswith(LABEL_PREFIX)]


def test_flat_market_gives_neutral_features() -> None:
    ts = np.arange(400, dtype=np.int64) * 3_600_000 + 1_640_995_200_000
    flat = pd.DataFrame({"ts": ts, "open": 100.0, "high": 100.0, "low": 100.0, "close": 100.0, "volume": 5.0})
    features = compute_features(flat)
    assert (features["rsi_14"] == 50).all() and (features["bb_pctb_20"] == 0.5).all()
    neutral = features[["ret_1", "vol_24", "macd", "macd_hist", "atr_14_rel", "volume_z_24", "hl_range"]]
    np.testing.assert_allclose(neutral.to_numpy(), 0.0, atol=1e-12)
