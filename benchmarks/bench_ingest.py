"""Backfill one year of 1-minute candles for one symbol from the local exchange, over HTTP via ccxt.

The exchange runs in its own process (`cta exchange serve`), as a venue would. Measured: candles/s,
requests/s against the configured request budget, time spent waiting on ccxt's rate limiter, and
the lake's write rate. The alternative, measured in the same run on the same bars: a plain
synchronous ccxt loop at ccxt's default (full-budget) rate limit that only fetches (no validation,
no storage) — what a typical download script does.

The year of 1-minute bars is SYNTHETIC (a seeded random walk: the shared real data holds only one
month of 1m bars); throughput does not depend on the price values.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import ccxt as ccxt_sync
import numpy as np
import pandas as pd

from cta.ccxt_factory import build_ccxt
from cta.config import ExchangeSettings
from cta.exchange import ExchangeAdapter, RetryPolicy
from cta.ingest import ingest_market
from cta.lake import CandleLake, Market
from cta.quarantine import Quarantine
from cta.storage import LocalStorage
from cta.validation import validate_candles

YEAR_START_MS = 1_672_531_200_000  # 2023-01-01 00:00 UTC
MINUTE_MS = 60_000
VENUE_WEIGHT_PER_MIN = 6000  # Binance spot REQUEST_WEIGHT per minute
KLINES_WEIGHT = 2  # Binance's weight of one klines request (limit up to 1000)
MARKET = Market("binance", "BTC/USDT", "1m")
# ccxt's cost of one candles request where it is not 1 (coinbase: brokerage/market/products/{id}/candles, cost 3)
CANDLE_REQUEST_COST = {"coinbase": 3}


def synthetic_minutes(n: int, seed: int = 7, step_ms: int = MINUTE_MS) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    close = 20_000 * np.exp(np.cumsum(rng.normal(0, 0.0008, n)))
    open_ = np.concatenate([[close[0]], close[:-1]])
    spread = np.abs(rng.normal(0, 0.0005, n)) * close
    return pd.DataFrame(
        {
            "timestamp": YEAR_START_MS + np.arange(n, dtype=np.int64) * step_ms,
            "open": open_.round(2),
            "high": (np.maximum(open_, close) + spread).round(2),
            "low": (np.minimum(open_, close) - spread).round(2),
            "close": close.round(2),
            "volume": rng.gamma(2.0, 5.0, n).round(5),
        }
    )


@contextmanager
def exchange_process(data_dir: Path, start_ms: int, work: Path, latency_ms: int = 0) -> Iterator[str]:
    """`cta exchange serve` in its own process on a free port; yields the base URL."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("CTA_")}
    env.update(
        {
            "CTA_PATHS__DATA_DIR": str(work / "data"),
            "CTA_PATHS__LOGS_DIR": str(work / "logs"),
            "CTA_LOGGING__LEVEL": "WARNING",
        }
    )
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "app.cli",
            "exchange",
            "serve",
            "--data-dir",
            str(data_dir),
            "--port",
            str(port),
            "--speed",
            "0",
            "--start",
            str(start_ms),
            "--latency-ms",
            str(latency_ms),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while socket.socket().connect_ex(("127.0.0.1", port)) != 0:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the exchange process did not start")
            time.sleep(0.2)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=30)


async def backfill(
    url: str,
    work: Path,
    minutes: int,
    *,
    share: float,
    in_flight: int,
    note: str = "",
    venue: str = "binance",
    timeframe: str = "1m",
) -> dict[str, Any]:
    """Backfill `minutes` bars' worth of time (bars of `timeframe`) from `venue`'s dialect of the local exchange."""
    market = Market(venue, "BTC/USDT", timeframe)
    bar_ms = MINUTE_MS if timeframe == "1m" else 60 * MINUTE_MS
    page_limit = 300 if venue == "coinbase" else 1000  # Coinbase serves at most 300 candles per request
    settings = ExchangeSettings(
        id=venue, api_url=url, rate_limit_share=share, market_time="replay", page_limit=page_limit
    )
    lake = CandleLake(LocalStorage(work / f"lake-{venue}-{timeframe}-{share}-{in_flight}-{len(note)}"))
    quarantine = Quarantine(LocalStorage(work / "quarantine"))
    started = time.perf_counter()
    async with ExchangeAdapter(settings, retry=RetryPolicy(max_retries=5)) as exchange:
        report = await ingest_market(
            exchange,
            lake,
            quarantine,
            market,
            start_ms=YEAR_START_MS,
            end_ms=YEAR_START_MS + minutes * bar_ms,
            page_limit=page_limit,
            on_invalid="fail",
            results_dir=None,
            run_id="bench",
            write_every_rows=100_000,
            pages_in_flight=in_flight,
        )
        elapsed = time.perf_counter() - started
        requests, throttle, retries = exchange.requests, exchange.throttle_wait_s, exchange.retries
    if venue == "binance":
        budget_rps = VENUE_WEIGHT_PER_MIN * share / KLINES_WEIGHT / 60
    else:  # ccxt's model of the venue's budget: rateLimit ms per cost unit, a candles request costing `cost` units
        model = getattr(ccxt_sync, venue)()
        cost = float(CANDLE_REQUEST_COST.get(venue, 1))
        budget_rps = 1000 * share / (float(model.rateLimit) * cost)
    where = "" if venue == "binance" and timeframe == "1m" else f" {venue} {timeframe}"
    return {
        "case": f"cta ingest{where} (ccxt + GX gate + lake), budget {share:.0%}, {in_flight} page(s) in flight{note}",
        "candles": report.added,
        "seconds": elapsed,
        "candles_per_s": report.added / elapsed,
        "requests": requests,
        "requests_per_s": requests / elapsed,
        "budget_requests_per_s": budget_rps,
        "rate_limiter_wait_s": throttle,
        "rate_limiter_wait_share": throttle / elapsed,
        "retries": retries,
    }


def naive_loop(url: str, minutes: int, note: str = "") -> dict[str, Any]:
    exchange = build_ccxt("binance", api_url=url, asynchronous=False)  # ccxt's default rateLimit: 100 % budget
    started = time.perf_counter()
    since, end, fetched, requests = YEAR_START_MS, YEAR_START_MS + minutes * MINUTE_MS, 0, 0
    while since < end:
        page = exchange.fetch_ohlcv("BTC/USDT", "1m", since=since, limit=1000)
        requests += 1
        if not page:
            break
        fetched += sum(1 for row in page if row[0] < end)
        since = page[-1][0] + MINUTE_MS
    elapsed = time.perf_counter() - started
    return {
        "case": f"alternative: plain sync ccxt loop, fetch only, 100 % budget{note}",
        "candles": fetched,
        "seconds": elapsed,
        "candles_per_s": fetched / elapsed,
        "requests": requests,
        "requests_per_s": requests / elapsed,
        "budget_requests_per_s": VENUE_WEIGHT_PER_MIN / KLINES_WEIGHT / 60,
    }


def lake_write_rate(frame: pd.DataFrame, work: Path) -> list[dict[str, Any]]:
    candles = frame.rename(columns={"timestamp": "ts"})
    lake = CandleLake(LocalStorage(work / "lake-write"))
    started = time.perf_counter()
    result = lake.upsert(MARKET, candles)
    first = time.perf_counter() - started
    started = time.perf_counter()
    again = lake.upsert(MARKET, candles)
    second = time.perf_counter() - started
    return [
        {
            "case": "lake upsert of the year, empty lake",
            "candles": result.rows_added,
            "seconds": first,
            "candles_per_s": result.rows_added / first,
        },
        {
            "case": "lake upsert of the same year again (no-op)",
            "candles": again.rows_unchanged,
            "seconds": second,
            "candles_per_s": again.rows_unchanged / second,
        },
    ]


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    minutes = 30 * 1440 if args.quick else 365 * 1440
    frame = synthetic_minutes(minutes)
    with tempfile.TemporaryDirectory(prefix="cta-bench-ingest-") as tmp:
        work = Path(tmp)
        (work / "candles").mkdir()
        with gzip.open(work / "candles" / "binance_BTCUSDT_1m.csv.gz", "wt", compresslevel=1) as handle:
            frame.to_csv(handle, index=False)
        started = time.perf_counter()
        validate_candles(frame.head(2).rename(columns={"timestamp": "ts"}), "1m", 2**62)  # import GX once
        gx_import_s = time.perf_counter() - started
        with exchange_process(work / "candles", YEAR_START_MS + (minutes + 1) * MINUTE_MS, work) as url:
            sequential = asyncio.run(backfill(url, work, minutes, share=0.9, in_flight=1))
            ours = asyncio.run(backfill(url, work, minutes, share=0.9, in_flight=4))
            throttled = asyncio.run(backfill(url, work, minutes // 4, share=0.1, in_flight=4))
            naive = naive_loop(url, minutes)
        quarter, note = minutes // 4, ", venue latency 100 ms"
        with exchange_process(work / "candles", YEAR_START_MS + (minutes + 1) * MINUTE_MS, work, 100) as url:
            slow_sequential = asyncio.run(backfill(url, work, quarter, share=0.9, in_flight=1, note=note))
            slow_ours = asyncio.run(backfill(url, work, quarter, share=0.9, in_flight=4, note=note))
            slow_naive = naive_loop(url, quarter, note=note)
        rows = [sequential, ours, throttled, naive, slow_sequential, slow_ours, slow_naive]
        rows += lake_write_rate(frame, work)
    for row in (sequential, ours):
        row["ratio_candles_per_s_vs_alternative"] = row["candles_per_s"] / naive["candles_per_s"]
    for row in (slow_sequential, slow_ours):
        row["ratio_candles_per_s_vs_alternative"] = row["candles_per_s"] / slow_naive["candles_per_s"]
    ours["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    ours["gx_import_s_excluded"] = gx_import_s
    return rows


def run_venues(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Binance's and Coinbase's dialects of the local exchange, same process, same synthetic bars, same run: a
    year of 1h and a month of 1m (a week and three days with --quick), 90 % of each venue's budget, 4 pages in
    flight (Binance: 1,000 candles per request; Coinbase: 300)."""
    hours, minutes = (7 * 24, 3 * 1440) if args.quick else (365 * 24, 30 * 1440)
    with tempfile.TemporaryDirectory(prefix="cta-bench-venues-") as tmp:
        work = Path(tmp)
        (work / "candles").mkdir()
        for timeframe, frame in (
            ("1h", synthetic_minutes(hours, seed=11, step_ms=60 * MINUTE_MS)),
            ("1m", synthetic_minutes(minutes)),
        ):
            with gzip.open(work / "candles" / f"binance_BTCUSDT_{timeframe}.csv.gz", "wt", compresslevel=1) as f:
                frame.to_csv(f, index=False)
        validate_candles(synthetic_minutes(2).rename(columns={"timestamp": "ts"}), "1m", 2**62)  # import GX once
        end = YEAR_START_MS + (hours + 1) * 60 * MINUTE_MS
        rows = []
        with exchange_process(work / "candles", end, work) as url:
            for timeframe, bars in (("1h", hours), ("1m", minutes)):
                for venue in ("binance", "coinbase"):
                    row = asyncio.run(
                        backfill(url, work, bars, share=0.9, in_flight=4, venue=venue, timeframe=timeframe)
                    )
                    row["case"] = f"{venue} {timeframe}, {bars:,} bars: cta ingest, 90 % budget, 4 pages in flight"
                    rows.append(row)
    for coinbase, binance in ((rows[1], rows[0]), (rows[3], rows[2])):
        coinbase["ratio_candles_per_s_vs_binance"] = coinbase["candles_per_s"] / binance["candles_per_s"]
    return rows
