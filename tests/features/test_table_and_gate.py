from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cta.lake import Market
from features.compute import InsufficientHistory
from features.registry import feature_names, registry_version, warmup_bars
from features.table import FeatureTable, feature_frame
from features.validation import validate_features
from tests.factories import HOUR_MS, real_candles

MARKET = Market("binance", "BTC/USDT", "1h")


@pytest.fixture(scope="module")
def candles() -> pd.DataFrame:
    return real_candles(rows=600)


@pytest.fixture(scope="module")
def frame(candles: pd.DataFrame) -> pd.DataFrame:
    return feature_frame(candles, MARKET)


def test_feature_frame_keys(frame: pd.DataFrame, candles: pd.DataFrame) -> None:
    assert list(frame.columns) == ["market_id", "ts", "event_timestamp", *feature_names()]
    assert (frame["market_id"] == "binance:BTC/USDT:1h").all()
    first = int(candles["ts"].iloc[warmup_bars()])
    assert frame["ts"].iloc[0] == first
    assert frame["event_timestamp"].iloc[0] == pd.Timestamp(first + HOUR_MS, unit="ms", tz="UTC")  # close time


def test_too_little_history_names_the_market() -> None:
    with pytest.raises(InsufficientHistory, match=r"binance:BTC/USDT:1h: 10 candles are too few .* need at least"):
        feature_frame(real_candles(rows=10), MARKET)


def test_table_write_read_and_currency(tmp_path: Path, frame: pd.DataFrame) -> None:
    table = FeatureTable(tmp_path)
    lineage = {"2021-01": "abc"}
    assert not table.is_current(MARKET, lineage, None)
    manifest = table.write(MARKET, frame, lineage, None)
    assert manifest.rows == len(frame) and manifest.registry_version == registry_version()
    pd.testing.assert_frame_equal(table.read(MARKET), frame)
    assert table.is_current(MARKET, lineage, None)
    assert not table.is_current(MARKET, {"2021-01": "changed"}, None)
    assert not table.is_current(MARKET, lineage, ("ret_1",))
    assert table.path(MARKET) == tmp_path / "exchange=binance/symbol=BTC_USDT/timeframe=1h/features.parquet"


def test_gate_passes_real_features(frame: pd.DataFrame, candles: pd.DataFrame, tmp_path: Path) -> None:
    report = validate_features(frame, len(candles), None, tmp_path)
    assert report.success, report.summary()
    assert report.results_path is not None and report.results_path.parent.name == "features"


@pytest.mark.parametrize(
    ("column", "value", "reason"),
    [
        ("rsi_14", 130.0, "rsi_14 outside [0, 100] or not finite"),
        ("ret_1", np.nan, "ret_1 missing after warm-up"),
        ("macd", np.inf, "macd outside"),
        ("hl_range", -0.1, "hl_range outside [0"),
    ],
)
def test_gate_rejects_bad_values(
    frame: pd.DataFrame, candles: pd.DataFrame, column: str, value: float, reason: str
) -> None:
    bad = frame.copy()
    bad.loc[7, column] = value
    report = validate_features(bad, len(candles), None)
    assert not report.success
    assert any(r.startswith(reason) for r in report.row_reasons[7]), report.row_reasons


def test_gate_rejects_wrong_shape(frame: pd.DataFrame, candles: pd.DataFrame) -> None:
    assert (
        "columns differ from the feature registry"
        in validate_features(frame.drop(columns=["vol_24"]), len(candles), None).table_failures
    )
    short = validate_features(frame.iloc[:-1], len(candles), None)
    assert any(f.startswith("row count is not candles - warm-up") for f in short.table_failures)
