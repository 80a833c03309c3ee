"""The serving worker's newest-row features equal the feature function's rows, feature by feature.

`compute_newest` (numpy, the last candle only) is a second implementation of every registered feature; these
tests iterate the registry, so a feature added later without an equal newest form fails here."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.compute import InsufficientHistory, compute_features, compute_newest, history_needed
from features.registry import FEATURES, feature_names
from tests.factories import HOUR_MS, candle_rows, real_candles

HISTORY = history_needed()
RTOL, ATOL = 1e-9, 1e-12  # summation order differs (numpy dot vs convolve, two-pass vs online): float dust only
COLUMNS = ["ts", "open", "high", "low", "close", "volume"]


@pytest.fixture(scope="module", params=[("BTCUSDT", "1h"), ("ETHUSDT", "1m")])
def candles(request: pytest.FixtureRequest) -> pd.DataFrame:
    symbol, timeframe = request.param
    return real_candles(symbol, timeframe).head(2500)


@pytest.fixture(scope="module")
def batch(candles: pd.DataFrame) -> pd.DataFrame:
    return compute_features(candles).set_index("ts")


def rows_of(candles: pd.DataFrame) -> list[list[float]]:
    return candles[COLUMNS].astype("float64").to_numpy().tolist()


def assert_rows_equal(newest: dict[str, float], expected: pd.Series, where: str) -> None:
    for name in feature_names():
        np.testing.assert_allclose(newest[name], float(expected[name]), rtol=RTOL, atol=ATOL, err_msg=f"{name} {where}")


def test_every_feature_equals_the_batch_row_on_real_candles(candles: pd.DataFrame, batch: pd.DataFrame) -> None:
    """At 60 random candles: the newest row from the serving tail equals the full-history batch row."""
    rows = rows_of(candles)
    picks = np.random.default_rng(7).choice(np.arange(HISTORY - 1, len(candles)), size=60, replace=False)
    for t in sorted(int(p) for p in picks):
        newest = compute_newest(rows[t + 1 - HISTORY : t + 1])
        assert list(newest) == feature_names()
        assert_rows_equal(newest, batch.loc[int(candles["ts"].iloc[t])], f"at row {t}")


def test_a_longer_tail_gives_the_same_row(candles: pd.DataFrame) -> None:
    rows = rows_of(candles)
    assert compute_newest(rows[:900]) == compute_newest(rows[900 - HISTORY : 900])


def test_degenerate_windows_take_the_documented_values() -> None:
    """Constant prices and zero volume: RSI 50, %b 0.5, z-score 0, volume ratio 1, like the column form."""
    rows = [[HOUR_MS * i, 100.0, 100.0, 100.0, 100.0, 0.0] for i in range(HISTORY)]
    newest = compute_newest(rows)
    expected = compute_features(pd.DataFrame(rows, columns=COLUMNS).astype({"ts": "int64"})).iloc[-1]
    assert_rows_equal(newest, expected, "on a flat market")
    degenerate = {name: newest[name] for name in ("rsi_14", "bb_pctb_20", "volume_z_24", "volume_ratio_24")}
    assert degenerate == {"rsi_14": 50.0, "bb_pctb_20": 0.5, "volume_z_24": 0.0, "volume_ratio_24": 1.0}


def test_wild_random_walks_match() -> None:
    """Prices over six orders of magnitude, volume spikes and zero-volume runs."""
    rng = np.random.default_rng(11)
    for trial in range(20):
        close = np.exp(np.cumsum(rng.normal(0, 0.2 if trial % 2 else 0.002, HISTORY)) + rng.uniform(-6, 10))
        open_ = np.concatenate([[close[0]], close[:-1]])
        high = np.maximum(open_, close) * (1 + rng.uniform(0, 0.05, HISTORY))
        low = np.minimum(open_, close) * (1 - rng.uniform(0, 0.05, HISTORY))
        volume = rng.pareto(1.5, HISTORY) * (rng.uniform(size=HISTORY) > 0.3)
        frame = pd.DataFrame(
            {"ts": HOUR_MS * (1000 + np.arange(HISTORY)), "open": open_, "high": high, "low": low}
            | {"close": close, "volume": volume}
        )
        assert_rows_equal(compute_newest(rows_of(frame)), compute_features(frame).iloc[-1], f"trial {trial}")


def test_too_short_a_tail_is_refused_with_the_count() -> None:
    with pytest.raises(InsufficientHistory, match=f"need at least {HISTORY}"):
        compute_newest(candle_rows(0, HISTORY - 1))


def test_a_subset_of_names_computes_only_those() -> None:
    names = ["rsi_14", "hour_sin"]
    newest = compute_newest(candle_rows(0, HISTORY), names)
    assert list(newest) == names


@pytest.mark.parametrize("spec", FEATURES, ids=lambda s: s.name)
def test_each_newest_form_needs_no_more_than_the_declared_warmup(spec: object) -> None:
    """The newest form reads only `warmup + 1` candles: a tail of exactly that length is enough."""
    rows = rows_of(real_candles("BTCUSDT", "1h", rows=400))
    needed = spec.warmup + 1  # type: ignore[attr-defined]
    value = compute_newest(rows[-needed:], [spec.name])[spec.name]  # type: ignore[attr-defined]
    expected = compute_features(pd.DataFrame(rows, columns=COLUMNS).astype({"ts": "int64"}), [spec.name]).iloc[-1]  # type: ignore[attr-defined]
    np.testing.assert_allclose(value, float(expected[spec.name]), rtol=RTOL, atol=ATOL)  # type: ignore[attr-defined]
