"""Every kind of malformed candle is caught by the "candles" suite with the right reason."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cta.candles import candles_from_rows
from cta.validation import candle_problem, find_gaps, validate_candles
from tests.factories import HOUR_MS, candle_rows, real_candles

T0 = 1_656_633_600_000  # 2022-07-01 00:00 UTC
NOW = T0 + 100 * HOUR_MS


def rows_with(index: int, row: list[object]) -> list[list[object]]:
    rows: list[list[object]] = [list(r) for r in candle_rows(T0, 10)]
    rows[index] = row
    return rows


@pytest.mark.parametrize(
    ("bad_row", "reason"),
    [
        ([T0 + 3 * HOUR_MS, 100, 101, 99, None, 10], "close missing or not a number"),
        ([T0 + 3 * HOUR_MS, 100, 101, 99, "abc", 10], "close missing or not a number"),
        ([T0 + 3 * HOUR_MS, 100, 101, 99, float("inf"), 10], "close not a finite positive price"),
        ([T0 + 3 * HOUR_MS, 0.0, 101, 0.0, 100, 10], "open not a finite positive price"),
        ([T0 + 3 * HOUR_MS, -5.0, 101, -6, 100, 10], "open not a finite positive price"),
        ([T0 + 3 * HOUR_MS, 100, 101, 99, 100.5, -1.0], "volume negative or not finite"),
        ([T0 + 3 * HOUR_MS, 100, 99, 101, 100.5, 10], "high below open or close"),
        ([T0 + 3 * HOUR_MS, 100, 100.2, 99, 100.5, 10], "high below open or close"),
        ([T0 + 3 * HOUR_MS, 100, 101, 100.2, 100.5, 10], "low above open or close"),
        ([T0 + 3 * HOUR_MS + 60_000, 100, 101, 99, 100.5, 10], "timestamp not aligned to 1h"),
        ([T0 + 2 * HOUR_MS, 100, 101, 99, 100.5, 10], "duplicate timestamp"),
        ([T0 + 2 * HOUR_MS, 100, 101, 99, 100.5, 10], "timestamp not increasing"),
        ([None, 100, 101, 99, 100.5, 10], "timestamp before 2000 or in the future"),
    ],
)
def test_malformed_candle_is_rejected_with_its_reason(bad_row: list[object], reason: str) -> None:
    candles = candles_from_rows(rows_with(3, bad_row))
    report = validate_candles(candles, "1h", NOW)
    assert not report.success
    assert reason in report.row_reasons.get(3, []), report.row_reasons
    assert all(i in (2, 3) for i in report.bad_rows)  # a duplicate also flags its twin


@pytest.mark.parametrize(
    ("bad_row", "reason"),
    [
        ([T0, 100, 101, 99, None, 10], "close missing or not a number"),
        ([T0, 100, 101, 99, "abc", 10], "close missing or not a number"),
        ([T0, 100, 101, 99, float("inf"), 10], "close not a finite positive price"),
        ([T0, 0.0, 101, 0.0, 100, 10], "open not a finite positive price"),
        ([T0, 100, 101, 99, 100.5, -1.0], "volume negative or not finite"),
        ([T0, 100, 99, 101, 100.5, 10], "high below open or close"),
        ([T0, 100, 101, 100.2, 100.5, 10], "low above open or close"),
        ([T0 + 60_000, 100, 101, 99, 100.5, 10], "timestamp not aligned to 1h"),
        ([None, 100, 101, 99, 100.5, 10], "timestamp before 2000 or in the future"),
        ([NOW - HOUR_MS + 1, 100, 101, 99, 100.5, 10], "timestamp not aligned to 1h"),
        ([NOW, 100, 101, 99, 100.5, 10], "candle not closed yet"),
        ([T0, 100, 101, 99], "columns differ from the candle schema"),
    ],
)
def test_the_serving_check_gives_the_suite_reason_for_one_candle(bad_row: list[object], reason: str) -> None:
    assert candle_problem(bad_row, "1h", NOW) == reason
    if len(bad_row) == 6:
        report = validate_candles(candles_from_rows([bad_row]), "1h", NOW)
        assert reason in report.row_reasons.get(0, []), report.row_reasons


def test_the_serving_check_passes_clean_candles_and_catches_repeats() -> None:
    rows = candle_rows(T0, 5)
    assert [candle_problem(r, "1h", NOW) for r in rows] == [None] * 5
    assert candle_problem(rows[2], "1h", NOW, previous_ts=int(rows[2][0])) == "duplicate timestamp"
    assert candle_problem(rows[1], "1h", NOW, previous_ts=int(rows[2][0])) == "timestamp not increasing"


def test_future_and_unclosed_candles_are_rejected() -> None:
    rows = candle_rows(T0, 3)
    candles = candles_from_rows(rows)
    # "now" is inside the last candle: it is not closed yet
    report = validate_candles(candles, "1h", now_ms=T0 + 2 * HOUR_MS + 1)
    assert report.row_reasons == {2: ["candle not closed yet"]}
    # "now" before the last candle opens: it is in the future
    report = validate_candles(candles, "1h", now_ms=T0 + HOUR_MS + 5)
    assert "timestamp before 2000 or in the future" in report.row_reasons[2]


def test_wrong_schema_fails_the_whole_batch() -> None:
    candles = candles_from_rows(candle_rows(T0, 5)).astype({"volume": "object"})
    report = validate_candles(candles, "1h", NOW)
    assert not report.success
    assert report.bad_rows == [0, 1, 2, 3, 4]
    assert all("volume is not float64" in r for r in report.row_reasons.values())


def test_missing_column_fails_the_whole_batch() -> None:
    candles = candles_from_rows(candle_rows(T0, 5)).drop(columns=["volume"])
    report = validate_candles(candles, "1h", NOW)
    assert not report.success
    assert "columns differ from the candle schema" in report.table_failures


def test_real_candles_pass_and_results_are_saved(tmp_path: Path) -> None:
    candles = real_candles()
    report = validate_candles(candles, "1h", now_ms=2_000_000_000_000, results_dir=tmp_path)
    assert report.success, report.summary()
    assert report.results_path is not None and report.results_path.exists()
    assert report.results_path.parent == tmp_path / "candles"


def test_real_gaps_are_reported_not_filled() -> None:
    candles = real_candles()
    gaps = find_gaps(candles["ts"], "1h")
    # the bundled 2021-2022 BTC slice has Binance maintenance gaps, e.g. 2021-02-11 03:00 (1 missing)
    assert (1_613_012_400_000, 1) in gaps
    assert len(candles) + sum(n for _, n in gaps) == (candles["ts"].iloc[-1] - candles["ts"].iloc[0]) // HOUR_MS + 1


def test_candles_from_rows_coerces_garbage_to_nan_not_drop() -> None:
    frame = candles_from_rows([[T0, "1", "2", "0.5", "x", None], ["bad", 1, 2, 0.5, 1, 1]])
    assert len(frame) == 2
    assert np.isnan(frame.loc[0, "close"]) and np.isnan(frame.loc[0, "volume"])
    assert frame.loc[1, "ts"] == -1
    assert list(frame.dtypes.astype(str)) == ["int64"] + ["float64"] * 5
