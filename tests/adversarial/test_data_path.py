"""The data path under hostile or careless input: a corrupted lake, implausible candles, broken candle
files, timestamps in the wrong unit, junk requests to the local exchange (issue 19: items 1, 5, 6, 10).

Each test names what a user did and what must happen; each failed on the code before the fix."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pandas as pd
import pytest

from cta.candles import candles_from_rows
from cta.config import DEFAULT_MAX_CLOSE_JUMP
from cta.errors import ConfigError, DataValidationError, ExchangeError, LakeCorruptionError
from cta.exchange_server.app import OTHER
from cta.exchange_server.candle_store import CandleStore
from cta.ingest import ingest_market
from cta.lake import CandleLake, Market, summarize_status
from cta.lake_audit import audit_lake
from cta.quarantine import Quarantine
from cta.storage import LocalStorage
from cta.validation import TS_UNIT_REASON, candle_problem, validate_candles
from tests.conftest import subprocess_env
from tests.exchange_fixtures import running_exchange
from tests.factories import HOUR_MS, candle_rows, real_candles

MARKET = Market("binance", "BTC/USDT", "1h")
T0 = 1_656_633_600_000  # 2022-07-01 00:00 UTC
NOW = T0 + 1000 * HOUR_MS
JUMP_1H = DEFAULT_MAX_CLOSE_JUMP["1h"]


# ----- item 1: one verified read path for the lake -----------------------------------------------------


def partition_key(lake: CandleLake, month: str) -> tuple[str, str]:
    """(data file key, manifest key) of MARKET's partition `month`."""
    manifest = lake.manifest(MARKET, month)
    assert manifest is not None
    prefix = f"candles/{MARKET.key}/month={month}"
    return f"{prefix}/{manifest.data_file}", f"{prefix}/manifest.json"


def edit_close(lake: CandleLake, data_key: str, _: str) -> None:
    frame = pd.read_parquet(Path(lake.uri) / data_key)
    frame.loc[5, "close"] *= 10  # a 10x close, OHLC made consistent: only the hash can tell
    frame.loc[5, "high"] = frame.loc[5, "close"]
    frame.to_parquet(Path(lake.uri) / data_key, index=False)


def drop_a_row(lake: CandleLake, data_key: str, _: str) -> None:
    frame = pd.read_parquet(Path(lake.uri) / data_key)
    frame.drop(index=7).to_parquet(Path(lake.uri) / data_key, index=False)


def delete_file(lake: CandleLake, data_key: str, _: str) -> None:
    (Path(lake.uri) / data_key).unlink()


def garbage_bytes(lake: CandleLake, data_key: str, _: str) -> None:
    (Path(lake.uri) / data_key).write_bytes(b"\x00not parquet at all" * 50)


def truncate_file(lake: CandleLake, data_key: str, _: str) -> None:
    path = Path(lake.uri) / data_key
    path.write_bytes(path.read_bytes()[:200])


def other_columns(lake: CandleLake, data_key: str, _: str) -> None:
    frame = pd.read_parquet(Path(lake.uri) / data_key)
    frame.rename(columns={"close": "closing"}).to_parquet(Path(lake.uri) / data_key, index=False)


def manifest_points_elsewhere(lake: CandleLake, _: str, manifest_key: str) -> None:
    path = Path(lake.uri) / manifest_key
    manifest = json.loads(path.read_text())
    manifest["data_file"] = "../../../../../../etc/passwd"
    path.write_text(json.dumps(manifest))


def manifest_not_json(lake: CandleLake, _: str, manifest_key: str) -> None:
    (Path(lake.uri) / manifest_key).write_text('{"exchange": "binance", "rows": ')


def manifest_wrong_types(lake: CandleLake, _: str, manifest_key: str) -> None:
    path = Path(lake.uri) / manifest_key
    manifest = json.loads(path.read_text())
    path.write_text(json.dumps({**manifest, "content_hash": 5, "rows": "many"}))


def manifest_copied_from_march(lake: CandleLake, data_key: str, manifest_key: str) -> None:
    """March's manifest and data file copied over February's: it would be read twice as March."""
    march_data, march_manifest = partition_key(lake, "2021-03")
    root = Path(lake.uri)
    (root / data_key).unlink()
    (root / data_key).with_name(Path(march_data).name).write_bytes((root / march_data).read_bytes())
    (root / manifest_key).write_bytes((root / march_manifest).read_bytes())


TAMPERINGS: dict[str, tuple[Callable[[CandleLake, str, str], None], str]] = {
    "edited close": (edit_close, "hash mismatch"),
    "row removed": (drop_a_row, "row count mismatch"),
    "file deleted": (delete_file, "missing file"),
    "garbage bytes": (garbage_bytes, "unreadable"),
    "truncated file": (truncate_file, "unreadable"),
    "columns renamed": (other_columns, "unreadable as candles"),
    "manifest names another file": (manifest_points_elsewhere, "not this partition's"),
    "manifest not JSON": (manifest_not_json, "manifest unreadable"),
    "manifest fields of the wrong type": (manifest_wrong_types, "manifest unreadable (rows is not of type int)"),
    "manifest copied from another month": (manifest_copied_from_march, "manifest names another partition"),
}


@pytest.fixture
def corrupted(lake: CandleLake, request: pytest.FixtureRequest) -> tuple[CandleLake, str]:
    """A lake of Jan-Mar 2021 whose February partition was tampered with as `request.param` says."""
    lake.upsert(MARKET, real_candles(rows=24 * 70))
    data_key, manifest_key = partition_key(lake, "2021-02")
    tamper, problem = TAMPERINGS[request.param]
    tamper(lake, data_key, manifest_key)
    return lake, problem


ALL_TAMPERINGS = pytest.mark.parametrize("corrupted", list(TAMPERINGS), indirect=True)


@ALL_TAMPERINGS
@pytest.mark.parametrize(
    "reader",
    [
        pytest.param(lambda lake: lake.read(MARKET), id="read"),
        pytest.param(lambda lake: lake.read(MARKET, start_ms=1_612_137_600_000), id="read from February"),
        pytest.param(lambda lake: lake.lineage(MARKET), id="lineage"),
        pytest.param(lambda lake: lake.snapshot(MARKET), id="snapshot"),
        pytest.param(lambda lake: lake.upsert(MARKET, real_candles(rows=24 * 70)), id="upsert"),
    ],
)
def test_every_lake_reader_stops_at_a_corrupt_partition_and_names_it(
    corrupted: tuple[CandleLake, str], reader: Callable[[CandleLake], Any]
) -> None:
    lake, problem = corrupted
    with pytest.raises(LakeCorruptionError) as caught:
        reader(lake)
    error = caught.value
    assert (error.month, problem in error.problem) == ("2021-02", True), error
    assert "binance:BTC/USDT:1h" in error.market or "BTC_USDT" in error.market
    assert "month=2021-02" in error.file
    assert len(str(error).splitlines()) == 1 and str(error).startswith("corrupt lake partition")
    assert isinstance(error, DataValidationError)  # stops a flow like any bad data


def test_a_range_read_that_skips_the_corrupt_month_still_works(lake: CandleLake) -> None:
    candles = real_candles(rows=24 * 70)
    lake.upsert(MARKET, candles)
    edit_close(lake, *partition_key(lake, "2021-02"))
    january = lake.read(MARKET, end_ms=1_612_137_600_000)  # only what it reads is verified (and needed)
    pd.testing.assert_frame_equal(january, candles[candles["ts"] < 1_612_137_600_000])


def test_upsert_never_launders_a_corrupt_partition_into_a_fresh_hash(lake: CandleLake) -> None:
    candles = real_candles(rows=24 * 40)  # January and part of February
    lake.upsert(MARKET, candles.iloc[: 24 * 35])
    edit_close(lake, *partition_key(lake, "2021-02"))
    before = lake.manifest(MARKET, "2021-02")
    with pytest.raises(LakeCorruptionError, match="2021-02"):
        lake.upsert(MARKET, candles)  # new February rows would have merged with the edited ones
    assert lake.manifest(MARKET, "2021-02") == before


@ALL_TAMPERINGS
def test_validate_and_lake_show_flag_the_partition_with_the_same_check(corrupted: tuple[CandleLake, str]) -> None:
    lake, problem = corrupted
    statuses = lake.partition_status()
    bad = [s for s in statuses if s.problem]
    assert [(s.month, problem in (s.problem or "")) for s in bad] == [("2021-02", True)]
    assert [s.month for s in statuses if not s.problem] == ["2021-01", "2021-03"]
    summary = summarize_status(statuses)
    flagged = summary[summary["status"] != "ok"]
    assert len(flagged) == 1 and flagged["status"].iloc[0].startswith("corrupt: 2021-02 ")
    audits = audit_lake(lake, NOW, Path(lake.uri) / "validation")
    assert not any(a.passed for a in audits)
    assert [p.split(":")[0] for a in audits for p in a.hash_problems] == ["2021-02"]


def test_features_are_not_built_from_a_corrupt_lake_even_when_the_table_is_current(
    lake: CandleLake, settings_for: Any, tmp_path: Path
) -> None:
    """The reported hole: the feature table named the partitions' hashes, the data file was edited, and
    `cta features build` found the table "up to date" and loaded Feast from it."""
    from features.table import FeatureTable
    from flows.features import build_market_features

    settings = settings_for(features={"table_dir": str(tmp_path / "features")})
    table = FeatureTable(settings.features.table_dir)
    lake.upsert(MARKET, real_candles(rows=24 * 70))
    assert build_market_features.fn(lake, table, MARKET, settings)["status"] == "rebuilt"
    assert build_market_features.fn(lake, table, MARKET, settings)["status"] == "up to date"
    edit_close(lake, *partition_key(lake, "2021-03"))
    with pytest.raises(LakeCorruptionError, match=r"binance:BTC/USDT:1h 2021-03 .*hash mismatch"):
        build_market_features.fn(lake, table, MARKET, settings)


def test_training_and_backtest_datasets_read_the_lake_before_the_feature_store(lake: CandleLake) -> None:
    from features.dataset import from_feature_store

    class UntouchableStore:
        def historical(self, *_: Any, **__: Any) -> pd.DataFrame:
            raise AssertionError("the feature store was queried before the lake was verified")

    lake.upsert(MARKET, real_candles(rows=24 * 70))
    delete_file(lake, *partition_key(lake, "2021-01"))
    with pytest.raises(LakeCorruptionError, match=r"2021-01 .*missing file"):
        from_feature_store(
            UntouchableStore(),  # type: ignore[arg-type]
            lake,
            MARKET,
            feature_names=["ret_1"],
            horizon=4,
            dead_zone_bps=10.0,
        )


def test_verification_reports_nothing_on_a_clean_lake(lake: CandleLake) -> None:
    candles = real_candles(rows=24 * 70)
    lake.upsert(MARKET, candles)
    assert lake.verify(MARKET) == [] and all(s.problem is None for s in lake.partition_status())
    snapshot = lake.snapshot(MARKET)
    pd.testing.assert_frame_equal(snapshot.candles, candles)
    assert snapshot.lineage == {m.month: m.content_hash for m in lake.manifests(MARKET)}
    assert set(summarize_status(lake.partition_status())["status"]) == {"ok"}


CTA = [sys.executable, "-m", "app.cli"]


@pytest.mark.integration
def test_cli_lake_show_and_validate_flag_a_corrupt_partition_in_one_line(tmp_path: Path) -> None:
    lake = CandleLake(LocalStorage(tmp_path / "lake"))
    lake.upsert(MARKET, real_candles(rows=24 * 70))
    edit_close(lake, *partition_key(lake, "2021-02"))
    env = subprocess_env(tmp_path)
    for command, table_text in ((["lake", "show"], "corrupt: 2021-02 hash mismatch"), (["validate"], "2021-02")):
        result = subprocess.run(
            [*CTA, *command], env=env, capture_output=True, text=True, timeout=240, cwd=tmp_path, check=False
        )
        assert result.returncode == 1, result.stderr
        assert table_text in " ".join(result.stdout.split()), result.stdout
        errors = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(errors) == 1 and errors[0].startswith("error: "), result.stderr


@pytest.mark.integration
def test_cli_features_build_refuses_a_corrupt_lake_naming_the_partition(tmp_path: Path) -> None:
    """The reported run: `cta features build` built features and loaded Feast from an edited partition."""
    lake = CandleLake(LocalStorage(tmp_path / "lake"))
    for symbol in ("BTCUSDT", "ETHUSDT"):
        lake.upsert(Market("binance", f"{symbol[:-4]}/USDT", "1h"), real_candles(symbol, rows=24 * 70))
    edit_close(lake, *partition_key(lake, "2021-02"))
    result = subprocess.run(
        [*CTA, "features", "build"],
        env=subprocess_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 1, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    assert errors[0].startswith("error: corrupt lake partition binance:BTC/USDT:1h 2021-02 (candles/exchange=binance")
    assert "hash mismatch" in errors[0]
    assert not (tmp_path / "features").exists() and not (tmp_path / "feast" / "online_store.db").exists()


# ----- item 5a: implausible moves ---------------------------------------------------------------------------


class ListVenue:
    """A venue serving fixed rows the way Binance pages klines."""

    def __init__(self, rows: list[list[Any]], now_ms: int = NOW) -> None:
        self.rows = rows
        self.now_ms = now_ms

    async def check_market(self, symbol: str, timeframe: str) -> None:
        return None

    async def fetch_time(self) -> int:
        return self.now_ms

    async def fetch_ohlcv(self, symbol: str, timeframe: str, since_ms: int, limit: int) -> list[list[Any]]:
        return [r for r in self.rows if r[0] >= since_ms][:limit]


def ingest(venue: ListVenue, lake: CandleLake, quarantine: Quarantine, **options: Any) -> Any:
    values: dict[str, Any] = {
        "start_ms": T0,
        "end_ms": None,
        "page_limit": 100,
        "on_invalid": "quarantine",
        "results_dir": None,
        "run_id": "adversarial",
        **options,
    }
    return asyncio.run(ingest_market(venue, lake, quarantine, MARKET, **values))


def spiked(rows: list[list[Any]], index: int, factor: float) -> list[list[Any]]:
    """`rows` with candle `index`'s close (and high, so OHLC stays consistent) times `factor`."""
    out = [list(r) for r in rows]
    out[index][4] *= factor
    out[index][2] = max(out[index][2], out[index][4])
    out[index][3] = min(out[index][3], out[index][4])
    return out


@pytest.fixture
def quarantine(tmp_path: Path) -> Quarantine:
    return Quarantine(LocalStorage(tmp_path / "quarantine"))


def test_a_10x_close_is_quarantined_with_its_reason(lake: CandleLake, quarantine: Quarantine) -> None:
    rows = spiked(candle_rows(T0, 48), 20, 10.0)
    report = ingest(ListVenue(rows), lake, quarantine)
    # the spike and the candle after it (a neighbour comparison cannot tell which side is wrong)
    assert report.quarantined == 2 and report.added == 46
    stored = lake.read(MARKET)
    assert stored["close"].max() < 200 and len(report.gaps) == 1
    held = quarantine.read(MARKET)
    assert set(held["reason"]) == {f"close moved more than {JUMP_1H:g}x from the previous close"}
    assert sorted(held["ts"]) == [T0 + 20 * HOUR_MS, T0 + 21 * HOUR_MS]


def test_the_first_candle_of_a_run_is_checked_against_the_stored_one(lake: CandleLake, quarantine: Quarantine) -> None:
    rows = candle_rows(T0, 24)
    ingest(ListVenue(rows[:12]), lake, quarantine)
    crashed = spiked(rows, 12, 0.05)  # the next run starts with a 20x drop: a decimal slip
    report = ingest(ListVenue(crashed), lake, quarantine)
    assert report.quarantined == 2 and lake.read(MARKET)["close"].min() > 50


def test_a_jump_across_write_batches_is_caught(lake: CandleLake, quarantine: Quarantine) -> None:
    rows = spiked(candle_rows(T0, 40), 20, 10.0)
    report = ingest(ListVenue(rows), lake, quarantine, page_limit=10, write_every_rows=20)  # the spike opens batch 2
    assert report.quarantined == 2


def test_the_bound_is_a_setting_and_real_moves_pass(quarantine: Quarantine, tmp_path: Path) -> None:
    rows = spiked(candle_rows(T0, 48), 20, 3.0)  # a 3x hour: implausible on a major, real on a small cap
    assert ingest(ListVenue(rows), CandleLake(LocalStorage(tmp_path / "a")), quarantine).quarantined == 0  # < 4x
    stricter = ingest(ListVenue(rows), CandleLake(LocalStorage(tmp_path / "b")), quarantine, max_close_jump=2.0)
    assert stricter.quarantined == 2
    real = real_candles()  # 2021-2022 BTC hourly, through May 2021: every move passes
    assert validate_candles(real, "1h", 2_000_000_000_000).success


def test_policy_fail_stops_the_run_on_a_spike(lake: CandleLake, quarantine: Quarantine) -> None:
    rows = spiked(candle_rows(T0, 48), 20, 10.0)
    with pytest.raises(DataValidationError, match="close moved more than 4x"):
        ingest(ListVenue(rows), lake, quarantine, on_invalid="fail")


def test_the_serving_check_gives_the_suite_verdict_on_a_jump() -> None:
    rows = spiked(candle_rows(T0, 3), 1, 10.0)
    reason = f"close moved more than {JUMP_1H:g}x from the previous close"
    assert candle_problem(rows[1], "1h", NOW, int(rows[0][0]), previous_close=rows[0][4]) == reason
    assert candle_problem(rows[1], "1h", NOW, int(rows[0][0]), previous_close=rows[0][4], max_close_jump=20) is None
    assert reason in validate_candles(candles_from_rows(rows), "1h", NOW).row_reasons[1]


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ({"1h": 1.0}, "greater than 1"),
        ({"1h": 0.5}, "greater than 1"),
        ({"1h": "Infinity"}, "finite"),
        ({"7m": 3.0}, "unsupported timeframe '7m'"),
    ],
)
def test_the_bound_setting_is_validated(settings_for: Any, value: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigError, match=r"validation\.max_close_jump") as caught:
        settings_for(validation={"max_close_jump": value})
    assert problem in str(caught.value)


def test_a_partial_bound_setting_keeps_the_other_defaults(settings_for: Any) -> None:
    bounds = settings_for(validation={"max_close_jump": {"1h": 6}}).validation.max_close_jump
    assert bounds == {**DEFAULT_MAX_CLOSE_JUMP, "1h": 6.0}


# ----- item 5b: the local exchange serves candle files as they are, or refuses them --------------------------

HEADER = "timestamp,open,high,low,close,volume\n"


def csv_file(directory: Path, lines: list[str], name: str = "binance_BTCUSDT_1h.csv") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(HEADER + "".join(line + "\n" for line in lines))
    return path


def good_lines(count: int = 6) -> list[str]:
    return [",".join(str(v) for v in row) for row in candle_rows(T0, count)]


@pytest.mark.parametrize(
    ("index", "line", "where", "problem"),
    [
        (3, f"{T0 + 3 * HOUR_MS},100,101,99,,10", "line 5", "close missing (empty or NaN)"),
        (3, f"{T0 + 3 * HOUR_MS},100,101,99,NaN,10", "line 5", "close missing (empty or NaN)"),
        (2, f"{T0 + 2 * HOUR_MS},100,101,99,abc,10", "line 4", "close not a number ('abc')"),
        (4, f"{T0 + 3 * HOUR_MS},100,101,99,100.7,10", "line 6", f"open time {T0 + 3 * HOUR_MS} repeated"),
        (0, f"{T0 // 1000},100,101,99,100.5,10", "line 2", "1656633600 looks like epoch seconds (2022-07-01T00:00Z)"),
        (1, f"{T0 + HOUR_MS}.5,100,101,99,100.5,10", "line 3", "not a whole number of milliseconds"),
    ],
    ids=["empty close", "NaN close", "text close", "duplicate open time", "seconds", "fractional ms"],
)
def test_the_local_exchange_refuses_a_file_it_cannot_serve_as_it_is(
    tmp_path: Path, index: int, line: str, where: str, problem: str
) -> None:
    """It used to drop NaN rows and keep the last of duplicate rows silently, so they never reached the gate."""
    lines = good_lines()
    lines[index] = line
    path = csv_file(tmp_path / "candles", lines)
    with pytest.raises(ConfigError, match="data_dir") as caught:
        CandleStore.load_dir(path.parent)
    message = str(caught.value)
    assert f"{path} {where}'" in message and problem in message, message
    assert len(message.splitlines()) == 1


def test_the_duplicate_message_names_both_rows(tmp_path: Path) -> None:
    lines = good_lines()
    lines[4] = lines[3].replace(",100.5,", ",100.7,")
    path = csv_file(tmp_path / "candles", lines)
    with pytest.raises(ConfigError) as caught:
        CandleStore.load_dir(path.parent)
    assert f"line 6': open time {T0 + 3 * HOUR_MS} repeated (first at {path} line 5)" in str(caught.value)


def test_an_open_time_in_two_files_names_both(tmp_path: Path) -> None:
    """Two files of one market used to be merged keeping the last copy of an overlapping candle."""
    first = csv_file(tmp_path / "c", good_lines(6), name="BTC_USDT-1h.csv")
    later = pd.DataFrame(candle_rows(T0 + 5 * HOUR_MS, 3), columns=["ts", "open", "high", "low", "close", "volume"])
    later.to_parquet(tmp_path / "c" / "BTC_USDT-1h.parquet")
    with pytest.raises(ConfigError) as caught:
        CandleStore.load_dir(tmp_path / "c")
    expected = f"BTC_USDT-1h.parquet row 1': open time {T0 + 5 * HOUR_MS} repeated (first at {first} line 7)"
    assert expected in str(caught.value), caught.value


def test_seconds_in_a_parquet_file_are_refused_naming_the_unit(tmp_path: Path) -> None:
    frame = pd.DataFrame(candle_rows(T0, 4), columns=["timestamp", "open", "high", "low", "close", "volume"])
    frame["timestamp"] //= 1000
    (tmp_path / "c").mkdir()
    frame.to_parquet(tmp_path / "c" / "BTC_USDT-1h.parquet")
    with pytest.raises(ConfigError) as caught:
        CandleStore.load_dir(tmp_path / "c")
    assert "BTC_USDT-1h.parquet row 1': open time 1656633600 looks like epoch seconds" in str(caught.value)


def test_a_truncated_gzip_is_one_clear_error(tmp_path: Path) -> None:
    source = Path(__file__).resolve().parents[2] / "cta" / "data" / "candles" / "binance_BTCUSDT_1h.csv.gz"
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / source.name).write_bytes(source.read_bytes()[:5000])
    with pytest.raises(ConfigError, match=r"binance_BTCUSDT_1h.csv.gz.*unreadable candle file"):
        CandleStore.load_dir(tmp_path / "c")


@pytest.mark.integration
def test_a_bad_but_representable_candle_is_served_unchanged_and_quarantined_by_ingest(tmp_path: Path) -> None:
    """Only what the server cannot represent is refused; everything else reaches the gate as it is."""
    from cta.config import ExchangeSettings, Secrets
    from cta.exchange import ExchangeAdapter, RetryPolicy

    lines = [",".join(str(v) for v in row) for row in candle_rows(T0, 30)]
    lines[10] = f"{T0 + 10 * HOUR_MS},100,99,101,100.5,10"  # high below low: served, then quarantined
    csv_file(tmp_path / "candles", lines)
    with running_exchange(data_dir=tmp_path / "candles", start=T0 + 40 * HOUR_MS) as server:
        series = server.service.store.series("BTC/USDT", "1h")
        assert series is not None and len(series) == 30 and series.high[10] == 99.0
        settings = ExchangeSettings(id="binance", api_url=server.url, rate_limit_share=50, market_time="replay")
        lake = CandleLake(LocalStorage(tmp_path / "lake"))
        quarantine = Quarantine(LocalStorage(tmp_path / "q"))

        async def run() -> Any:
            async with ExchangeAdapter(settings, Secrets(), RetryPolicy(max_retries=0), seed=1) as exchange:
                return await ingest_market(
                    exchange,
                    lake,
                    quarantine,
                    MARKET,
                    start_ms=T0,
                    end_ms=None,
                    page_limit=1000,
                    on_invalid="quarantine",
                    results_dir=None,
                    run_id="served-as-is",
                )

        report = asyncio.run(run())
    assert (report.added, report.quarantined) == (29, 1)
    assert "high below open or close" in quarantine.read(MARKET)["reason"].iloc[0]


# ----- item 5c: timestamps in seconds -----------------------------------------------------------------------


class SecondsVenue(ListVenue):
    """A venue (or a broken adapter) whose candles are stamped in epoch seconds; its clock is fine."""

    async def fetch_ohlcv(self, symbol: str, timeframe: str, since_ms: int, limit: int) -> list[list[Any]]:
        return [r for r in self.rows if r[0] >= since_ms // 1000][:limit]


@pytest.mark.parametrize("on_invalid", ["fail", "quarantine"])
def test_candles_in_seconds_fail_the_run_naming_the_unit(
    lake: CandleLake, quarantine: Quarantine, on_invalid: str
) -> None:
    """They used to be quarantined as "before 2000" and, with on_invalid=quarantine, the run succeeded
    having ingested nothing."""
    rows = [[int(r[0]) // 1000, *r[1:]] for r in candle_rows(T0, 24)]
    with pytest.raises(DataValidationError, match=r"wrong unit \(1656633600 looks like epoch seconds \(2022-07-01"):
        ingest(SecondsVenue(rows), lake, quarantine, on_invalid=on_invalid, end_ms=T0 + 24 * HOUR_MS)
    assert lake.manifests() == []
    held = quarantine.read(MARKET)
    assert len(held) == 24 and all(TS_UNIT_REASON in r for r in held["reason"])


def test_a_venue_clock_in_seconds_is_refused_before_any_request(lake: CandleLake, quarantine: Quarantine) -> None:
    with pytest.raises(ExchangeError, match=r"clock is not epoch milliseconds: .* looks like epoch seconds"):
        ingest(ListVenue(candle_rows(T0, 24), now_ms=NOW // 1000), lake, quarantine)


def test_microseconds_are_named_too() -> None:
    rows = [[int(r[0]) * 1000, *r[1:]] for r in candle_rows(T0, 3)]
    report = validate_candles(candles_from_rows(rows), "1h", NOW)
    assert all(TS_UNIT_REASON in reasons for reasons in report.row_reasons.values())
    assert candle_problem(rows[0], "1h", NOW) == TS_UNIT_REASON


# ----- item 10: the local exchange's per-path state is bounded ----------------------------------------------


@pytest.mark.integration
def test_junk_paths_and_methods_do_not_grow_the_request_counters() -> None:
    with running_exchange() as server:

        async def flood() -> None:
            async with aiohttp.ClientSession() as session:
                for i in range(1500):
                    async with session.get(f"{server.url}/api/v3/junk-{i}") as response:
                        assert response.status == 404
                for method in ("PUT", "PATCH", "OPTIONS", "PROPFIND", "LOCK") * 20:
                    async with session.request(method, f"{server.url}/api/v3/time") as response:
                        assert response.status == 405
                async with session.get(f"{server.url}/api/v3/time") as response:
                    assert response.status == 200

        asyncio.run(flood())
        counts = server.state()["request_counts"]
        assert counts[OTHER] == 1500 and counts["/api/v3/time"] == 101
        assert len(counts) == 2, counts  # the one route asked for, and everything else
        assert server.request_count("/api/v3/junk-7") == 1500  # every junk path reads the one shared counter
        assert server.request_count("/api/v3/time", "PUT") == 100  # unrouted methods share a counter too
        assert server.request_count("/api/v3/time", "GET") == 1
        assert len(server.service._method_counts) == 3
