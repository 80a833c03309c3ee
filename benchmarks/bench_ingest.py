"""Backfill one year of 1-minute candles for one symbol from the local exchange, over HTTP via ccxt.

Measures candles/s, requests/s against the configured request-weight budget, time spent waiting on
ccxt's rate limiter, and the lake's write rate. The alternative, measured in the same run: a plain
synchronous ccxt loop with ccxt's default Binance rate limit (what a typical script does), on the
first month of the same bars.

The year of 1-minute bars is SYNTHETIC (a seeded random walk: the shared real data holds only one
month of 1m bars); throughput does not depend on the price values.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cta.ccxt_factory import build_ccxt
from cta.config import ExchangeSettings
from cta.exchange import ExchangeAdapter, RetryPolicy
from cta.exchange_server.runner import LocalExchangeServer
from cta.exchange_server.settings import LocalExchangeSettings
from cta.ingest import ingest_market
from cta.lake import CandleLake, Market
from cta.quarantine import Quarantine
from cta.storage import LocalStorage

YEAR_START_MS = 1_672_531_200_000  # 2023-01-01 00:00 UTC
MINUTE_MS = 60_000
VENUE_WEIGHT_LIMIT_PER_MIN = 6000  # Binance spot REQUEST_WEIGHT per minute
WEIGHT_BUDGET_PER_MIN = 5400  # what CTA is configured to use: 90 % of the venue limit
KLINES_WEIGHT_AT_1000 = 5


def synthetic_minutes(n: int, seed: int = 7) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    close = 20_000 * np.exp(np.cumsum(rng.normal(0, 0.0008, n)))
    open_ = np.concatenate([[close[0]], close[:-1]])
    spread = np.abs(rng.normal(0, 0.0005, n)) * close
    return pd.DataFrame({
        "timestamp": YEAR_START_MS + np.arange(n, dtype=np.int64) * MINUTE_MS,
        "open": open_.round(2), "high": (np.maximum(open_, close) + spread).round(2),
        "low": (np.minimum(open_, close) - spread).round(2), "close": close.round(2),
        "volume": rng.gamma(2.0, 5.0, n).round(5),
    })


def write_candle_file(frame: pd.DataFrame, directory: Path) -> None:
    with gzip.open(directory / "binance_BTCUSDT_1m.csv.gz", "wt", compresslevel=1) as handle:
        frame.to_csv(handle, index=False)


async def backfill(url: str, lake_dir: Path, minutes: int) -> dict[str, Any]:
    settings = ExchangeSettings(id="binance", api_url=url, request_weight_per_minute=WEIGHT_BUDGET_PER_MIN)
    lake = CandleLake(LocalStorage(lake_dir / "lake"))
    quarantine = Quarantine(LocalStorage(lake_dir / "quarantine"))
    started = time.perf_counter()
    async with ExchangeAdapter(settings, retry=RetryPolicy(max_retries=5)) as exchange:
        report = await ingest_market(
            exchange, lake, quarantine, Market("binance", "BTC/USDT", "1m"),
            start_ms=YEAR_START_MS, end_ms=YEAR_START_MS + minutes * MINUTE_MS, page_limit=1000,
            on_invalid="fail", results_dir=None, run_id="bench", write_every_rows=100_000,
        )
        elapsed = time.perf_counter() - started
        requests, throttle, retries = exchange.requests, exchange.throttle_wait_s, exchange.retries
    budget_rps = WEIGHT_BUDGET_PER_MIN / KLINES_WEIGHT_AT_1000 / 60
    return {
        "case": "cta ingest (async ccxt, configured budget)", "candles": report.added, "seconds": elapsed,
        "candles_per_s": report.added / elapsed, "requests": requests, "requests_per_s": requests / elapsed,
        "budget_requests_per_s": budget_rps, "rate_limiter_wait_s": throttle,
        "rate_limiter_wait_share": throttle / elapsed, "retries": retries,
    }


def naive_loop(url: str, minutes: int) -> dict[str, Any]:
    exchange = build_ccxt("binance", api_url=url, asynchronous=False)  # ccxt's default rateLimit (50 ms/weight)
    started = time.perf_counter()
    since, end, rows = YEAR_START_MS, YEAR_START_MS + minutes * MINUTE_MS, []
    requests = 0
    while since < end:
        page = exchange.fetch_ohlcv("BTC/USDT", "1m", since=since, limit=1000)
        requests += 1
        if not page:
            break
        rows += [r for r in page if r[0] < end]
        since = page[-1][0] + MINUTE_MS
    elapsed = time.perf_counter() - started
    return {"case": "naive sync ccxt loop (ccxt default rate limit)", "candles": len(rows), "seconds": elapsed,
            "candles_per_s": len(rows) / elapsed, "requests": requests, "requests_per_s": requests / elapsed}


def lake_write_rate(frame: pd.DataFrame, directory: Path) -> list[dict[str, Any]]:
    candles = frame.rename(columns={"timestamp": "ts"})
    lake = CandleLake(LocalStorage(directory / "lake-write"))
    market = Market("binance", "BTC/USDT", "1m")
    started = time.perf_counter()
    result = lake.upsert(market, candles)
    first = time.perf_counter() - started
    started = time.perf_counter()
    again = lake.upsert(market, candles)
    second = time.perf_counter() - started
    return [
        {"case": "lake upsert, empty lake", "candles": result.rows_added, "seconds": first,
         "candles_per_s": result.rows_added / first},
        {"case": "lake upsert, same year again (no-op)", "candles": again.rows_unchanged, "seconds": second,
         "candles_per_s": again.rows_unchanged / second},
    ]


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    minutes = 30 * 1440 if args.quick else 365 * 1440
    naive_minutes = 7 * 1440 if args.quick else 30 * 1440
    frame = synthetic_minutes(minutes)
    with tempfile.TemporaryDirectory(prefix="cta-bench-ingest-") as tmp:
        directory = Path(tmp)
        (directory / "candles").mkdir()
        write_candle_file(frame, directory / "candles")
        server_settings = LocalExchangeSettings(
            port=0, data_dir=directory / "candles", speed=0.0,
            start=YEAR_START_MS + (minutes + 1) * MINUTE_MS, weight_limit_per_minute=VENUE_WEIGHT_LIMIT_PER_MIN,
        )
        with LocalExchangeServer(server_settings) as server:
            ours = asyncio.run(backfill(server.url, directory, minutes))
        with LocalExchangeServer(server_settings) as server:  # a fresh weight window for the alternative
            naive = naive_loop(server.url, naive_minutes)
        rows = [ours, naive, *lake_write_rate(frame, directory)]
    ours["speedup_vs_naive"] = ours["candles_per_s"] / naive["candles_per_s"]
    rows[0]["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return rows
