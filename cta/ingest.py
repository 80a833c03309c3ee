"""Ingestion: paginated backfill of CLOSED candles from a venue into the validated candle lake.

`ingest_market` is the unit of work (one market): resume from the last stored candle (or start at the
venue's first candle when the configured start lies before its history), page through the venue at its
max page size, keep only closed candles, validate each batch with the "candles"
gate, quarantine rejected rows with reasons, and upsert the rest atomically. Gaps are reported,
never filled. Timestamps in another unit than epoch milliseconds (a source sending seconds) are a broken
source, not bad candles: the batch is quarantined and the run fails whatever `on_invalid` says, so a run
that could ingest nothing because of them never ends with success.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, Protocol

import pandas as pd

from cta.candles import candles_from_rows, timestamp_units, wrong_unit_note
from cta.errors import ConfigError, DataValidationError, ExchangeError
from cta.lake import CandleLake, Market
from cta.quarantine import Quarantine
from cta.timeframes import last_closed_open_time, timeframe_ms
from cta.validation import TS_UNIT_REASON, find_gaps, validate_candles

log = logging.getLogger(__name__)

ProgressCallback = Callable[[Market, int, int], None]  # (market, candles so far, candles expected)


class CandleSource(Protocol):
    async def check_market(self, symbol: str, timeframe: str) -> None: ...

    async def fetch_time(self) -> int: ...

    async def fetch_ohlcv(self, symbol: str, timeframe: str, since_ms: int, limit: int) -> list[list[Any]]: ...


@dataclass
class IngestReport:
    market: Market
    fetched: int = 0
    added: int = 0
    unchanged: int = 0
    quarantined: int = 0
    pages: int = 0
    first_ts: int | None = None
    last_ts: int | None = None
    gaps: list[tuple[int, int]] = field(default_factory=list)
    validation_results: list[str] = field(default_factory=list)
    failure: str | None = None

    def line(self) -> str:
        gap_note = f", {len(self.gaps)} gaps ({sum(n for _, n in self.gaps)} missing)" if self.gaps else ""
        return (
            f"{self.market}: fetched {self.fetched}, added {self.added}, unchanged {self.unchanged}, "
            f"quarantined {self.quarantined}{gap_note}"
        )


@dataclass(frozen=True)
class IngestPlan:
    """What an ingestion run does, decided before any request: where it starts and stops."""

    market: Market
    since_ms: int  # first candle open time to fetch
    until_ms: int  # exclusive bound on open time: every candle before it is closed

    @property
    def expected(self) -> int:
        return max(0, (self.until_ms - self.since_ms) // timeframe_ms(self.market.timeframe))


def plan_ingest(
    market: Market, start_ms: int, end_ms: int | None, last_stored_ts: int | None, exchange_now_ms: int
) -> IngestPlan:
    """Pure: resume after the last stored candle; never past the newest closed candle or `end_ms`."""
    if end_ms is not None and start_ms >= end_ms:
        raise ConfigError("ingest.start", start_ms, f"start must be before end ({end_ms})")
    step = timeframe_ms(market.timeframe)
    aligned_start = -(-start_ms // step) * step  # first candle opening at or after start
    since = aligned_start if last_stored_ts is None else max(aligned_start, last_stored_ts + step)
    until = last_closed_open_time(exchange_now_ms, market.timeframe) + step
    if end_ms is not None:
        until = min(until, end_ms)
    return IngestPlan(market=market, since_ms=since, until_ms=max(since, until))


async def ingest_market(
    source: CandleSource,
    lake: CandleLake,
    quarantine: Quarantine,
    market: Market,
    *,
    start_ms: int,
    end_ms: int | None,
    page_limit: int,
    on_invalid: Literal["fail", "quarantine"],
    results_dir: Path | None,
    run_id: str,
    write_every_rows: int = 50_000,
    pages_in_flight: int = 1,
    on_progress: ProgressCallback | None = None,
    max_close_jump: float | None = None,
) -> IngestReport:
    """Backfill one market. Raises DataValidationError (policy 'fail') after quarantining bad rows.

    The range is cut into chunks of `page_limit` candles on the timeframe grid; up to
    `pages_in_flight` chunks are fetched concurrently (the adapter keeps the request budget) and
    consumed in order, so validation and writes overlap the next requests. `max_close_jump` bounds the
    close-to-close move (validation.max_close_jump; None = the suite's default for the timeframe), checked
    across batches and against the newest stored candle too.
    """
    await source.check_market(market.symbol, market.timeframe)
    now_ms = await source.fetch_time()
    if timestamp_units([now_ms])[0] != "ms":
        note = wrong_unit_note(now_ms) or f"{now_ms} is not a time between 2000 and 2100 in epoch milliseconds"
        raise ExchangeError(f"{market}: the venue's clock is not epoch milliseconds: {note}; nothing was ingested")
    last_stored = lake.last_ts(market)
    plan = plan_ingest(market, start_ms, end_ms, last_stored, now_ms)
    if plan.expected == 0 and last_stored is None:
        log.warning(
            "%s: nothing to ingest: no candle between the start %d and the venue's now %d",
            market,
            plan.since_ms,
            now_ms,
        )
    # The newest stored candle (a verified read of its partition): the first new candle's move is checked from it.
    stored = lake.read(market, start_ms=last_stored) if last_stored is not None else None
    previous_close = float(stored["close"].iloc[-1]) if stored is not None and len(stored) else None
    report = IngestReport(market=market)
    writer = _BatchWriter(
        lake,
        quarantine,
        market,
        now_ms,
        on_invalid,
        results_dir,
        run_id,
        report,
        last_stored,
        previous_close=previous_close,
        max_close_jump=max_close_jump,
    )
    chunk_ms = page_limit * timeframe_ms(market.timeframe)
    # The first page, asked alone: where the venue's candles begin. A venue answering "the first candles at or
    # after `since`" (Binance, and anything speaking its dialect) names its first candle here, so a start date
    # long before the venue's history costs this one request instead of one per empty page.
    first_page: list[list[Any]] | None = None
    if plan.expected > 0:
        first_page = await source.fetch_ohlcv(market.symbol, market.timeframe, plan.since_ms, page_limit)
        report.pages += 1
        plan = jump_to_first_candle(plan, first_page, chunk_ms)
    chunk_starts = iter(range(plan.since_ms, plan.until_ms, chunk_ms))

    def fetch(chunk_start: int, first_rows: list[list[Any]] | None = None) -> asyncio.Task[list[list[Any]]]:
        chunk_end = min(chunk_start + chunk_ms, plan.until_ms)
        return asyncio.create_task(
            _fetch_chunk(source, market, (chunk_start, chunk_end), page_limit, report, first_rows=first_rows)
        )

    in_flight: deque[asyncio.Task[list[list[Any]]]] = deque()
    if (first_chunk := next(chunk_starts, None)) is not None:
        in_flight.append(fetch(first_chunk, first_page))
        in_flight.extend(fetch(c) for c in itertools.islice(chunk_starts, pages_in_flight - 1))
    buffer: list[list[Any]] = []
    try:
        while in_flight:
            rows = await in_flight.popleft()
            if (following := next(chunk_starts, None)) is not None:
                in_flight.append(fetch(following))
            buffer.extend(rows)
            report.fetched += len(rows)
            if on_progress:
                on_progress(market, report.fetched, plan.expected)
            if len(buffer) >= write_every_rows:  # validate and write in a thread; fetching goes on
                await asyncio.to_thread(writer.write, buffer)
                buffer = []
        if buffer:
            await asyncio.to_thread(writer.write, buffer)
    finally:
        for task in in_flight:
            task.cancel()
    log.info("ingest %s", report.line())
    return report


def jump_to_first_candle(plan: IngestPlan, first_page: Sequence[Sequence[Any]], chunk_ms: int) -> IngestPlan:
    """Pure: `plan` starting at the venue's first candle when the answer to the first page (asked from
    plan.since_ms) shows none in the whole first chunk; otherwise `plan` unchanged.

    Only a candle the venue names moves the start: an empty answer (a venue answering by time window, or no
    candle yet) keeps the plan, so nothing the venue holds can be skipped."""
    step = timeframe_ms(plan.market.timeframe)
    first = min((t for row in first_page if (t := _open_time(row)) is not None), default=None)
    if first is None or first < plan.since_ms + chunk_ms:
        return plan
    since = min(first - (first - plan.since_ms) % step, plan.until_ms)  # on the plan's grid, never past its end
    log.info(
        "%s: the venue's first candle from %d is at %d: starting there (%d empty candle slots skipped)",
        plan.market,
        plan.since_ms,
        first,
        (since - plan.since_ms) // step,
    )
    return replace(plan, since_ms=since)


async def _fetch_chunk(
    source: CandleSource,
    market: Market,
    chunk: tuple[int, int],
    page_limit: int,
    report: IngestReport,
    *,
    first_rows: list[list[Any]] | None = None,
) -> list[list[Any]]:
    """Every candle the venue has with chunk_start <= open time < chunk_end, in venue order.

    One request when the chunk is full or the venue's answer runs past the chunk (a gap inside it);
    more when the venue caps its pages below `page_limit` or the chunk ends in a gap. `first_rows`, if given,
    is the venue's answer for the chunk's start already fetched (no venue candle lies between it and the chunk).
    """
    step = timeframe_ms(market.timeframe)
    chunk_start, chunk_end = chunk
    collected: list[list[Any]] = []
    since = chunk_start
    while since < chunk_end:
        if first_rows is not None:
            rows, first_rows = first_rows, None
        else:
            rows = await source.fetch_ohlcv(market.symbol, market.timeframe, since, page_limit)
            report.pages += 1
        in_chunk = list(itertools.takewhile(lambda row: (ts := _open_time(row)) is None or ts < chunk_end, rows))
        collected.extend(in_chunk)
        newest = max((t for row in in_chunk if (t := _open_time(row)) is not None), default=None)
        if len(in_chunk) < len(rows) or newest is None:  # the answer ran past the chunk, or nothing more
            break
        if newest < since:  # the venue went backwards: stop rather than loop forever
            log.warning("%s: venue returned candles before %d; stopping pagination", market, since)
            break
        since = newest + step
    return collected


def _open_time(row: Sequence[Any]) -> int | None:
    try:
        return int(row[0])
    except (TypeError, ValueError, IndexError):
        return None


@dataclass
class _BatchWriter:
    """Validates a batch of raw rows, quarantines rejects with reasons, upserts the rest."""

    lake: CandleLake
    quarantine: Quarantine
    market: Market
    now_ms: int
    on_invalid: Literal["fail", "quarantine"]
    results_dir: Path | None
    run_id: str
    report: IngestReport
    previous_ts: int | None  # newest stored candle, to report a gap at the batch boundary
    previous_close: float | None = None  # newest stored or written candle's close: the next move starts there
    max_close_jump: float | None = None

    def write(self, raw_rows: list[list[Any]]) -> None:
        market, report = self.market, self.report
        candles = candles_from_rows(raw_rows)
        gate = validate_candles(
            candles,
            market.timeframe,
            self.now_ms,
            self.results_dir,
            max_close_jump=self.max_close_jump,
            previous_close=self.previous_close,
        )
        if gate.results_path:
            report.validation_results.append(str(gate.results_path))
        reasons = gate.reasons_series(candles.index)
        bad = (reasons != "").to_numpy()
        if gate.table_failures:
            bad[:] = True
            reasons = reasons.where(reasons != "", "; ".join(gate.table_failures))
        if bad.any():
            self.quarantine.put(
                market,
                candles[bad],
                reasons[bad],
                run_id=self.run_id,
                detected_at_ms=self.now_ms,
                raw=[row for row, is_bad in zip(raw_rows, bad, strict=True) if is_bad],
            )
            report.quarantined += int(bad.sum())
            wrong_unit = [i for i, reasons in gate.row_reasons.items() if TS_UNIT_REASON in reasons]
            if wrong_unit:
                report.failure = gate.summary()
                note = wrong_unit_note(int(candles["ts"].iloc[wrong_unit[0]]))
                raise DataValidationError(
                    f"{market}: {len(wrong_unit)} of {len(candles)} candles have timestamps in the wrong unit "
                    f"({note}); the source is broken, not the candles: nothing from this batch was written "
                    "and the rows are in quarantine"
                )
            if self.on_invalid == "fail":
                report.failure = gate.summary()
                raise DataValidationError(
                    f"{market}: {gate.summary()}; rejected rows are in quarantine, nothing from this batch was written"
                )
        good = candles[~bad]
        result = self.lake.upsert(market, good)
        report.added += result.rows_added
        report.unchanged += result.rows_unchanged
        if not result.conflicts.empty:
            conflict_reasons = pd.Series("conflicts with the stored candle", index=result.conflicts.index)
            self.quarantine.put(
                market, result.conflicts, conflict_reasons, run_id=self.run_id, detected_at_ms=self.now_ms
            )
            report.quarantined += len(result.conflicts)
        if good.empty:
            return
        ts = good["ts"].sort_values()
        if self.previous_ts is not None and self.previous_ts < int(ts.iloc[0]):
            ts = pd.concat([pd.Series([self.previous_ts]), ts], ignore_index=True)
        report.gaps += find_gaps(ts, market.timeframe)
        report.first_ts = int(good["ts"].min()) if report.first_ts is None else report.first_ts
        report.last_ts = self.previous_ts = int(good["ts"].max())
        self.previous_close = float(good.loc[good["ts"].idxmax(), "close"])
