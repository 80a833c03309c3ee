"""Ingestion logic against a hand-written in-memory venue (the HTTP path is in tests/integration)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from cta.errors import ConfigError, DataValidationError
from cta.ingest import ingest_market, plan_ingest
from cta.lake import CandleLake, Market
from cta.quarantine import Quarantine
from tests.factories import HOUR_MS, candle_rows

MARKET = Market("binance", "BTC/USDT", "1h")
T0 = 1_656_633_600_000  # 2022-07-01 00:00 UTC


class ListVenue:
    """Serves fixed rows the way Binance pages klines: ts >= since, at most `max_page` per call."""

    def __init__(self, rows: list[list[Any]], now_ms: int, max_page: int = 1000) -> None:
        self.rows = rows
        self.now_ms = now_ms
        self.max_page = max_page
        self.calls: list[tuple[int, int]] = []

    async def check_market(self, symbol: str, timeframe: str) -> None:
        return None

    async def fetch_time(self) -> int:
        return self.now_ms

    async def fetch_ohlcv(self, symbol: str, timeframe: str, since_ms: int, limit: int) -> list[list[Any]]:
        self.calls.append((since_ms, limit))
        page = [r for r in self.rows if r[0] is None or r[0] >= since_ms]
        return page[: min(limit, self.max_page)]


def run(venue: ListVenue, lake: CandleLake, quarantine: Quarantine, **kw: Any) -> Any:
    options: dict[str, Any] = {
        "start_ms": T0,
        "end_ms": None,
        "page_limit": 100,
        "on_invalid": "fail",
        "results_dir": None,
        "run_id": "test-run",
    }
    options.update(kw)
    return asyncio.run(ingest_market(venue, lake, quarantine, MARKET, **options))


def test_plan_resumes_after_last_stored_and_stops_at_newest_closed_candle() -> None:
    now = T0 + 10 * HOUR_MS + 123  # candle 10 has just opened, so candles 0..9 are closed
    plan = plan_ingest(MARKET, T0, None, last_stored_ts=None, exchange_now_ms=now)
    assert (plan.since_ms, plan.until_ms, plan.expected) == (T0, T0 + 10 * HOUR_MS, 10)
    resumed = plan_ingest(MARKET, T0, None, last_stored_ts=T0 + 4 * HOUR_MS, exchange_now_ms=now)
    assert resumed.since_ms == T0 + 5 * HOUR_MS and resumed.expected == 5
    bounded = plan_ingest(MARKET, T0 + 1, T0 + 3 * HOUR_MS, last_stored_ts=None, exchange_now_ms=now)
    assert (bounded.since_ms, bounded.until_ms) == (T0 + HOUR_MS, T0 + 3 * HOUR_MS)  # start rounds up
    up_to_date = plan_ingest(MARKET, T0, None, last_stored_ts=T0 + 9 * HOUR_MS, exchange_now_ms=now)
    assert up_to_date.expected == 0


def test_start_after_end_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="start must be before end"):
        plan_ingest(MARKET, T0 + HOUR_MS, T0, None, T0 + 100 * HOUR_MS)


@pytest.mark.parametrize("in_flight", [1, 3])
@pytest.mark.parametrize("count", [99, 100, 101, 200, 250])
def test_pagination_boundaries_fetch_every_candle_once(
    in_flight: int, count: int, lake: CandleLake, quarantine: Quarantine
) -> None:
    venue = ListVenue(candle_rows(T0, count), now_ms=T0 + count * HOUR_MS)
    report = run(venue, lake, quarantine, pages_in_flight=in_flight)
    stored = lake.read(MARKET)
    assert report.added == count == len(stored)
    assert stored["ts"].tolist() == [T0 + i * HOUR_MS for i in range(count)]
    assert [since for since, _ in venue.calls] == [T0 + i * 100 * HOUR_MS for i in range(-(-count // 100))]


def test_venue_capping_page_size_below_request_still_gets_everything(lake: CandleLake, quarantine: Quarantine) -> None:
    venue = ListVenue(candle_rows(T0, 230), now_ms=T0 + 230 * HOUR_MS, max_page=50)
    assert run(venue, lake, quarantine, pages_in_flight=3).added == 230
    assert sorted(lake.read(MARKET)["ts"]) == [T0 + i * HOUR_MS for i in range(230)]


def test_a_gap_longer_than_a_page_is_crossed_and_reported(lake: CandleLake, quarantine: Quarantine) -> None:
    rows = candle_rows(T0, 10) + candle_rows(T0 + 500 * HOUR_MS, 10) + candle_rows(T0 + 595 * HOUR_MS, 5)
    venue = ListVenue(rows, now_ms=T0 + 600 * HOUR_MS)
    report = run(venue, lake, quarantine, pages_in_flight=4)
    assert report.added == 25
    assert report.gaps == [(T0 + 9 * HOUR_MS, 490), (T0 + 509 * HOUR_MS, 85)]


def test_unclosed_candle_is_not_stored(lake: CandleLake, quarantine: Quarantine) -> None:
    venue = ListVenue(candle_rows(T0, 10), now_ms=T0 + 9 * HOUR_MS + 5)  # candle 9 still open
    report = run(venue, lake, quarantine)
    assert report.added == 9 and lake.last_ts(MARKET) == T0 + 8 * HOUR_MS


def test_incremental_resume_fetches_only_new_candles(lake: CandleLake, quarantine: Quarantine) -> None:
    rows = candle_rows(T0, 300)
    run(ListVenue(rows, now_ms=T0 + 150 * HOUR_MS), lake, quarantine)
    venue = ListVenue(rows, now_ms=T0 + 300 * HOUR_MS)
    report = run(venue, lake, quarantine)
    assert report.added == 150 and report.fetched == 150
    assert venue.calls[0][0] == T0 + 150 * HOUR_MS
    assert len(lake.read(MARKET)) == 300


def test_bad_rows_fail_the_batch_by_default_and_are_quarantined(lake: CandleLake, quarantine: Quarantine) -> None:
    rows = candle_rows(T0, 20)
    rows[5] = [T0 + 5 * HOUR_MS, 100.0, 99.0, 101.0, 100.5, 10.0]  # high < low
    with pytest.raises(DataValidationError, match="high below open or close"):
        run(ListVenue(rows, now_ms=T0 + 20 * HOUR_MS), lake, quarantine)
    assert lake.manifests(MARKET) == []  # nothing from the failed batch was written
    kept = quarantine.read(MARKET)
    assert kept["ts"].tolist() == [T0 + 5 * HOUR_MS]
    assert "high below open or close" in kept["reason"].iloc[0]
    assert kept["raw"].iloc[0].startswith("[")


def test_quarantine_policy_keeps_good_rows_and_reports_the_hole(lake: CandleLake, quarantine: Quarantine) -> None:
    rows = candle_rows(T0, 20)
    rows[5] = [T0 + 5 * HOUR_MS, 100.0, 101.0, 99.0, 100.5, -3.0]  # negative volume
    report = run(ListVenue(rows, now_ms=T0 + 20 * HOUR_MS), lake, quarantine, on_invalid="quarantine")
    assert report.added == 19 and report.quarantined == 1
    assert report.gaps == [(T0 + 4 * HOUR_MS, 1)]
    assert quarantine.read(MARKET)["reason"].tolist() == ["volume negative or not finite"]


def test_rerunning_a_window_changes_nothing(lake: CandleLake, quarantine: Quarantine) -> None:
    venue = ListVenue(candle_rows(T0, 50), now_ms=T0 + 50 * HOUR_MS)
    run(venue, lake, quarantine)
    before = lake.manifests(MARKET)
    again = run(venue, lake, quarantine)
    assert again.fetched == 0 and lake.manifests(MARKET) == before
    # an explicit overlapping window (e.g. after deleting nothing) is deduplicated too
    result = lake.upsert(MARKET, lake.read(MARKET))
    assert result.rows_added == 0


def test_small_write_batches_commit_progress(lake: CandleLake, quarantine: Quarantine) -> None:
    venue = ListVenue(candle_rows(T0, 250), now_ms=T0 + 250 * HOUR_MS)
    report = run(venue, lake, quarantine, write_every_rows=100)
    assert report.added == 250 and len(lake.read(MARKET)) == 250


@pytest.mark.parametrize("in_flight", [1, 3])
def test_ingestion_starts_at_the_venues_first_candle_not_at_the_start_date(
    in_flight: int, lake: CandleLake, quarantine: Quarantine
) -> None:
    first = T0 + 5000 * HOUR_MS  # the venue's history begins ~7 months after the configured start
    venue = ListVenue(candle_rows(first, 150), now_ms=first + 150 * HOUR_MS)
    report = run(venue, lake, quarantine, pages_in_flight=in_flight)
    assert report.added == 150 and lake.read(MARKET)["ts"].iloc[0] == first
    # one request finds the first candle (and is its page), then pages from there: no walk through 50 empty pages
    assert [since for since, _ in venue.calls] == [T0, first + 100 * HOUR_MS]
    assert report.pages == 2 and report.gaps == []


def test_the_first_page_answer_is_reused_when_history_begins_inside_it(
    lake: CandleLake, quarantine: Quarantine
) -> None:
    venue = ListVenue(candle_rows(T0 + 30 * HOUR_MS, 120), now_ms=T0 + 150 * HOUR_MS)
    report = run(venue, lake, quarantine, pages_in_flight=2)
    assert report.added == 120
    assert [since for since, _ in venue.calls] == [T0, T0 + 100 * HOUR_MS]  # as before: the chunk grid from start


def test_jump_to_first_candle_moves_only_on_a_named_candle() -> None:
    from cta.ingest import jump_to_first_candle

    plan = plan_ingest(MARKET, T0, None, last_stored_ts=None, exchange_now_ms=T0 + 1000 * HOUR_MS)
    chunk = 100 * HOUR_MS
    assert jump_to_first_candle(plan, [], chunk) == plan  # an empty answer (a venue paging by window) keeps it
    assert jump_to_first_candle(plan, [[None, 1, 1, 1, 1, 1]], chunk) == plan
    assert jump_to_first_candle(plan, candle_rows(T0 + 99 * HOUR_MS, 3), chunk) == plan  # inside the first chunk
    assert jump_to_first_candle(plan, [[T0 + 10, 1, 1, 1, 1, 1]], chunk) == plan
    jumped = jump_to_first_candle(plan, candle_rows(T0 + 400 * HOUR_MS, 3), chunk)
    assert (jumped.since_ms, jumped.until_ms, jumped.expected) == (T0 + 400 * HOUR_MS, plan.until_ms, 600)
    off_grid = jump_to_first_candle(plan, [[T0 + 400 * HOUR_MS + 7, 1, 1, 1, 1, 1]], chunk)
    assert off_grid.since_ms == T0 + 400 * HOUR_MS  # floored onto the plan's grid: that candle is still fetched
    beyond = jump_to_first_candle(plan, candle_rows(T0 + 2000 * HOUR_MS, 1), chunk)
    assert beyond.since_ms == beyond.until_ms == plan.until_ms and beyond.expected == 0


def test_no_candle_in_the_window_is_one_request(lake: CandleLake, quarantine: Quarantine) -> None:
    venue = ListVenue(candle_rows(T0 + 900 * HOUR_MS, 10), now_ms=T0 + 800 * HOUR_MS)  # history begins after now
    report = run(venue, lake, quarantine, pages_in_flight=4)
    assert report.added == 0 and len(venue.calls) == 1
