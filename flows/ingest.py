"""`ingest_flow`: candles from the venue into the validated lake, one Prefect task per market.

Retries: reads are retried inside the exchange adapter (per request, with jittered backoff and
Retry-After); the Prefect tasks add none, so a temporary error is retried at exactly one layer and a
permanent one (unknown symbol, bad data) fails the run at once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from dataclasses import asdict
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.context import get_run_context

from cta.components import configured_markets, make_exchange, make_lake, make_quarantine
from cta.config import Settings
from cta.ingest import IngestReport, ProgressCallback, ingest_market
from cta.lake import CandleLake, Market
from cta.quarantine import Quarantine


@task(cache_policy=NO_CACHE, task_run_name="ingest {market}")
async def ingest_market_task(
    source: Any,
    lake: CandleLake,
    quarantine: Quarantine,
    market: Market,
    *,
    settings: Settings,
    run_id: str,
    on_progress: ProgressCallback | None = None,
) -> IngestReport:
    return await ingest_market(
        source,
        lake,
        quarantine,
        market,
        start_ms=settings.ingest.start_ms,
        end_ms=settings.ingest.end_ms,
        page_limit=settings.exchange.page_limit,
        on_invalid=settings.validation.on_invalid,
        results_dir=settings.validation.results_dir,
        run_id=run_id,
        write_every_rows=settings.ingest.write_every_rows,
        pages_in_flight=settings.ingest.pages_in_flight,
        on_progress=on_progress,
        max_close_jump=settings.validation.max_close_jump.get(market.timeframe),
    )


@contextlib.contextmanager
def _progress(enabled: bool, markets: list[Market]) -> Iterator[ProgressCallback | None]:
    if not enabled:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()
    ) as progress:
        bars = {m: progress.add_task(f"backfill {m}", total=None) for m in markets}

        def update(market: Market, done: int, expected: int) -> None:
            progress.update(bars[market], completed=done, total=max(expected, done))

        yield update


@flow(name="ingest", log_prints=False)
async def ingest_flow(
    settings: Settings,
    symbols: list[str] | None = None,
    timeframes: list[str] | None = None,
    show_progress: bool = False,
) -> list[dict[str, Any]]:
    """Backfill/resume the configured markets (or the given subset) into the candle lake, over the
    window `settings.ingest` gives."""
    logger = get_run_logger()
    markets = configured_markets(settings, symbols, timeframes)
    lake, quarantine = make_lake(settings), make_quarantine(settings)
    run_id = str(get_run_context().flow_run.id)  # type: ignore[union-attr]
    logger.info("ingesting %s from %s into %s", ", ".join(map(str, markets)), settings.ingest.start, lake.uri)
    async with make_exchange(settings) as exchange:
        with _progress(show_progress, markets) as on_progress:
            semaphore = asyncio.Semaphore(settings.ingest.concurrency)

            async def one(market: Market) -> IngestReport:
                async with semaphore:
                    return await ingest_market_task(
                        exchange, lake, quarantine, market, settings=settings, run_id=run_id, on_progress=on_progress
                    )

            outcomes = await asyncio.gather(*(one(m) for m in markets), return_exceptions=True)
    failures = [o for o in outcomes if isinstance(o, BaseException)]
    reports = [o for o in outcomes if isinstance(o, IngestReport)]
    for report in reports:
        logger.info(report.line())
    if failures:
        raise failures[0]
    return [asdict(r) | {"market": str(r.market)} for r in reports]
