"""No look-ahead, proven on real candles, for EVERY registered feature (the tests iterate the
registry, so a feature added later is checked automatically)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.compute import compute_features, history_needed
from features.indicators import Bars
from features.registry import FEATURES, feature_names, warmup_bars
from tests.factories import real_candles

WARMUP = warmup_bars()
RTOL, ATOL = 1e-9, 1e-12  # rolling sums/variances are computed online by pandas: float dust only


@pytest.fixture(scope="module", params=[("BTCUSDT", "1h"), ("ETHUSDT", "1m")])
def candles(request: pytest.FixtureRequest) -> pd.DataFrame:
    symbol, timeframe = request.param
    return real_candles(symbol, timeframe).head(3000)


@pytest.fixture(scope="module")
def batch(candles: pd.DataFrame) -> pd.DataFrame:
    return compute_features(candles).set_index("ts")


def sample_rows(candles: pd.DataFrame, count: int = 25, seed: int = 3) -> list[int]:
    rng = np.random.default_rng(seed)
    return sorted(rng.choice(np.arange(WARMUP + 1, len(candles)), size=count, replace=False).tolist())


@pytest.mark.parametrize("spec", FEATURES, ids=lambda s: s.name)
def test_declared_warmup_is_exact_and_values_are_finite_after_it(spec: object, candles: pd.DataFrame) -> None:
    values = spec.fn(Bars.from_candles(candles)).to_numpy()  # type: ignore[attr-defined]
    assert np.isnan(values[: spec.warmup]).all(), f"{spec.name} has values inside its declared warm-up"  # type: ignore[attr-defined]
    assert np.isfinite(values[spec.warmup :]).all(), f"{spec.name} is not finite after its warm-up"  # type: ignore[attr-defined]


def test_prefix_invariance(candles: pd.DataFrame, batch: pd.DataFrame) -> None:
    """Computing on candles[:t+1] gives exactly the row the full history gives at t."""
    for t in sample_rows(candles):
        prefix = compute_features(candles.iloc[: t + 1]).set_index("ts")
        ts = int(candles["ts"].iloc[t])
        np.testing.assert_array_equal(prefix.loc[ts].to_numpy(), batch.loc[ts].to_numpy(), err_msg=f"row {t}")


def test_the_future_cannot_change_the_past(candles: pd.DataFrame, batch: pd.DataFrame) -> None:
    """Poison every candle after t: nothing at or before t may move."""
    t = len(candles) // 2
    poisoned = candles.copy()
    poisoned.loc[t + 1 :, ["open", "high", "low", "close"]] *= 7.0
    poisoned.loc[t + 1 :, "volume"] *= 0.1
    changed = compute_features(poisoned).set_index("ts")
    upto = batch.index <= int(candles["ts"].iloc[t])
    pd.testing.assert_frame_equal(changed[upto], batch[upto])
    assert not np.allclose(changed[~upto].to_numpy(), batch[~upto].to_numpy())  # the poison did land


def test_warmup_stability_when_history_is_prepended(candles: pd.DataFrame, batch: pd.DataFrame) -> None:
    """Values after the warm-up do not depend on how much older history there is."""
    for start in (1, 37, 500):
        later = compute_features(candles.iloc[start:]).set_index("ts")
        np.testing.assert_allclose(later.to_numpy(), batch.loc[later.index].to_numpy(), rtol=RTOL, atol=ATOL)


def test_incremental_candle_by_candle_equals_batch(candles: pd.DataFrame, batch: pd.DataFrame) -> None:
    """The serving path: on each new candle, compute from the last `history_needed()` candles only."""
    tail = history_needed()
    assert tail == WARMUP + 1
    rows = []
    for t in range(len(candles) - 150, len(candles)):
        window = candles.iloc[t + 1 - tail : t + 1]
        rows.append(compute_features(window).iloc[-1])
    incremental = pd.DataFrame(rows).set_index("ts")
    incremental.index = incremental.index.astype("int64")
    np.testing.assert_allclose(incremental.to_numpy(), batch.loc[incremental.index].to_numpy(), rtol=RTOL, atol=ATOL)


def test_output_columns_are_the_registry(batch: pd.DataFrame, candles: pd.DataFrame) -> None:
    assert list(batch.columns) == feature_names()
    assert len(batch) == len(candles) - WARMUP
    assert (batch.dtypes == "float64").all()
