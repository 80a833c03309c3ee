from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from cta.lake import CandleLake, Market
from cta.storage import LocalStorage
from tests.factories import real_candles

MARKET = Market("binance", "BTC/USDT", "1h")


def test_upsert_partitions_by_month_and_reads_back_exactly(lake: CandleLake) -> None:
    candles = real_candles(rows=24 * 70)  # Jan to mid-March 2021
    result = lake.upsert(MARKET, candles)
    assert result.rows_added == len(candles)
    assert [m.month for m in lake.manifests(MARKET)] == ["2021-01", "2021-02", "2021-03"]
    pd.testing.assert_frame_equal(lake.read(MARKET), candles)
    assert lake.last_ts(MARKET) == int(candles["ts"].iloc[-1])
    assert sum(m.rows for m in lake.manifests(MARKET)) == len(candles)


def test_reingesting_a_window_changes_nothing(lake: CandleLake) -> None:
    candles = real_candles(rows=1000)
    lake.upsert(MARKET, candles)
    before = {m.month: m for m in lake.manifests(MARKET)}
    files_before = sorted(lake.storage.list())
    again = lake.upsert(MARKET, candles)
    assert again.rows_added == 0 and again.rows_unchanged == len(candles) and again.partitions_written == []
    assert {m.month: m for m in lake.manifests(MARKET)} == before
    assert sorted(lake.storage.list()) == files_before


def test_overlapping_windows_never_duplicate(lake: CandleLake) -> None:
    candles = real_candles(rows=2000)
    lake.upsert(MARKET, candles.iloc[:1200])
    result = lake.upsert(MARKET, candles.iloc[800:])
    assert result.rows_added == 800 and result.rows_unchanged == 400
    stored = lake.read(MARKET)
    assert stored["ts"].is_unique
    pd.testing.assert_frame_equal(stored, candles)


def test_a_candle_that_disagrees_with_the_stored_one_is_a_conflict_not_a_write(lake: CandleLake) -> None:
    candles = real_candles(rows=100)
    lake.upsert(MARKET, candles)
    changed = candles.iloc[[10, 11]].copy()
    changed["close"] += 1.0
    result = lake.upsert(MARKET, changed)
    assert result.rows_added == 0 and len(result.conflicts) == 2
    pd.testing.assert_frame_equal(lake.read(MARKET), candles)


def test_range_reads(lake: CandleLake) -> None:
    candles = real_candles(rows=24 * 60)
    lake.upsert(MARKET, candles)
    start, end = int(candles["ts"].iloc[100]), int(candles["ts"].iloc[900])
    window = lake.read(MARKET, start_ms=start, end_ms=end)
    assert len(window) == 800 and window["ts"].iloc[0] == start and window["ts"].iloc[-1] < end


class CrashingStorage(LocalStorage):
    """Storage that dies when asked to write a manifest (simulating a crash mid-upsert)."""

    def put(self, key: str, data: bytes) -> None:
        if key.endswith("manifest.json"):
            raise OSError("simulated crash before the manifest was committed")
        super().put(key, data)


def test_a_crash_mid_upsert_leaves_the_previous_partition_intact(tmp_path: Path) -> None:
    root = tmp_path / "lake"
    lake = CandleLake(LocalStorage(root))
    candles = real_candles(rows=300)  # all January 2021
    lake.upsert(MARKET, candles.iloc[:200])
    crashing = CandleLake(CrashingStorage(root))
    with pytest.raises(OSError, match="simulated crash"):
        crashing.upsert(MARKET, candles.iloc[200:])
    # readers still see exactly the committed 200 rows; the orphaned data file is ignored
    pd.testing.assert_frame_equal(lake.read(MARKET), candles.iloc[:200].reset_index(drop=True))
    assert lake.verify(MARKET) == []
    # and the next upsert completes and removes the orphan
    lake.upsert(MARKET, candles.iloc[200:])
    pd.testing.assert_frame_equal(lake.read(MARKET), candles)
    data_files = [k for k in lake.storage.list() if k.rsplit("/", 1)[-1].startswith("data-")]
    assert len(data_files) == 1


def test_local_writes_leave_no_temp_files(lake: CandleLake) -> None:
    lake.upsert(MARKET, real_candles(rows=50))
    assert not [p for p in Path(lake.uri).rglob("*") if p.name.endswith(".tmp")]


def test_verify_detects_an_edited_partition(lake: CandleLake) -> None:
    candles = real_candles(rows=100)
    lake.upsert(MARKET, candles)
    manifest = lake.manifests(MARKET)[0]
    key = f"candles/{MARKET.key}/month={manifest.month}/{manifest.data_file}"
    tampered = candles.copy()
    tampered.loc[5, "close"] = 1.0
    lake.storage.put(key, tampered.to_parquet(index=False))
    assert lake.verify(MARKET) and "does not match" in lake.verify(MARKET)[0]
