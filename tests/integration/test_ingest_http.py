"""Ingestion through ccxt over HTTP against the local Binance-compatible exchange (no patching)."""

from __future__ import annotations

import asyncio
import gzip
import socket
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from cta.config import ExchangeSettings, Secrets
from cta.errors import DataValidationError, ExchangeError, TemporaryExchangeError
from cta.exchange import ExchangeAdapter, RetryPolicy
from cta.exchange_server import LocalExchangeServer
from cta.ingest import IngestReport, ingest_market
from cta.lake import CandleLake, Market
from cta.quarantine import Quarantine
from tests.exchange_fixtures import EXCHANGE_API_KEY, EXCHANGE_API_SECRET, EXCHANGE_START_MS, running_exchange
from tests.factories import HOUR_MS, real_candles

pytestmark = pytest.mark.integration
MAY_2022 = 1_651_363_200_000  # 2022-05-01 00:00 UTC
BTC = Market("binance", "BTC/USDT", "1h")
ETH = Market("binance", "ETH/USDT", "1h")


class RecordingSleep:
    """Records backoff delays instead of sleeping (the adapter's injected sleep)."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


def adapter(
    url: str, *, max_retries: int = 3, sleep: Any = None, secret: str = EXCHANGE_API_SECRET, timeout_ms: int = 5_000
) -> ExchangeAdapter:
    settings = ExchangeSettings(
        id="binance", api_url=url, rate_limit_share=50, timeout_ms=timeout_ms, market_time="replay"
    )
    secrets = Secrets(api_key=EXCHANGE_API_KEY, api_secret=secret)  # type: ignore[arg-type]
    return ExchangeAdapter(
        settings,
        secrets,
        RetryPolicy(max_retries=max_retries, backoff_base_s=0.01),
        sleep=sleep or RecordingSleep(),
        seed=1,
    )


async def ingest(
    exchange: ExchangeAdapter, lake: CandleLake, quarantine: Quarantine, market: Market, **kw: Any
) -> IngestReport:
    options: dict[str, Any] = {
        "start_ms": MAY_2022,
        "end_ms": None,
        "page_limit": 1000,
        "on_invalid": "fail",
        "results_dir": None,
        "run_id": "it",
        "pages_in_flight": 4,
    }
    options.update(kw)
    return await ingest_market(exchange, lake, quarantine, market, **options)


def test_backfill_two_symbols_concurrently_matches_the_real_candles(
    exchange_server: LocalExchangeServer, lake: CandleLake, quarantine: Quarantine
) -> None:
    async def both() -> list[IngestReport]:
        async with adapter(exchange_server.url) as exchange:
            return list(
                await asyncio.gather(
                    ingest(exchange, lake, quarantine, BTC, page_limit=300),
                    ingest(exchange, lake, quarantine, ETH, page_limit=300),
                )
            )

    reports = asyncio.run(both())
    expected_rows = (EXCHANGE_START_MS - MAY_2022) // HOUR_MS  # every candle closed by the replay clock
    for report, symbol in zip(reports, ("BTCUSDT", "ETHUSDT"), strict=True):
        assert report.added == expected_rows and report.pages >= 3
        truth = real_candles(symbol)
        truth = truth[(truth["ts"] >= MAY_2022) & (truth["ts"] < EXCHANGE_START_MS)].reset_index(drop=True)
        pd.testing.assert_frame_equal(lake.read(report.market), truth)


def test_incremental_resume_after_the_clock_moves(
    exchange_server: LocalExchangeServer, lake: CandleLake, quarantine: Quarantine
) -> None:
    async def run() -> IngestReport:
        async with adapter(exchange_server.url) as exchange:
            return await ingest(exchange, lake, quarantine, BTC)

    first = asyncio.run(run())
    exchange_server.clock.set(EXCHANGE_START_MS + 5 * HOUR_MS + 30 * 60_000)  # 5.5 h later
    second = asyncio.run(run())
    assert second.added == 5 and second.fetched == 5
    assert lake.last_ts(BTC) == EXCHANGE_START_MS + 4 * HOUR_MS  # the candle opened at +5h is not closed
    assert asyncio.run(run()).fetched == 0
    assert len(lake.read(BTC)) == first.added + 5


def test_429_is_retried_honouring_retry_after(
    exchange_server: LocalExchangeServer, lake: CandleLake, quarantine: Quarantine
) -> None:
    sleep = RecordingSleep()
    exchange_server.inject_fault("rate_limit", "/api/v3/klines", count=1)

    async def run() -> tuple[IngestReport, int]:
        async with adapter(exchange_server.url, sleep=sleep) as exchange:
            report = await ingest(exchange, lake, quarantine, BTC)
            return report, exchange.retries

    report, retries = asyncio.run(run())
    assert retries == 1 and report.added == (EXCHANGE_START_MS - MAY_2022) // HOUR_MS
    assert len(sleep.delays) == 1 and sleep.delays[0] >= 1.0  # Retry-After is a whole number of seconds >= 1


def test_5xx_faults_are_retried_and_ingestion_recovers(
    exchange_server: LocalExchangeServer, lake: CandleLake, quarantine: Quarantine
) -> None:
    exchange_server.inject_fault("error", "/api/v3/klines", count=2)
    sleep = RecordingSleep()

    async def run() -> tuple[IngestReport, int]:
        async with adapter(exchange_server.url, sleep=sleep) as exchange:
            return await ingest(exchange, lake, quarantine, BTC), exchange.retries

    report, retries = asyncio.run(run())
    assert retries == 2 and report.added == (EXCHANGE_START_MS - MAY_2022) // HOUR_MS
    assert sleep.delays[0] < sleep.delays[1]  # exponential backoff


def test_timeouts_are_retried(tmp_path: Path, lake: CandleLake, quarantine: Quarantine) -> None:
    with running_exchange(faults={"timeout_s": 1.0}) as server:
        server.inject_fault("timeout", "/api/v3/klines", count=1)

        async def run() -> tuple[IngestReport, int]:
            async with adapter(server.url, timeout_ms=300) as exchange:
                return await ingest(exchange, lake, quarantine, BTC), exchange.retries

        report, retries = asyncio.run(run())
    assert retries == 1 and report.added > 0


def test_persistent_5xx_gives_up_after_max_retries_and_writes_nothing(
    exchange_server: LocalExchangeServer, lake: CandleLake, quarantine: Quarantine
) -> None:
    exchange_server.inject_fault("error", "/api/v3/klines", count=100)

    async def run() -> None:
        async with adapter(exchange_server.url, max_retries=2) as exchange:
            await ingest(exchange, lake, quarantine, BTC)

    with pytest.raises(TemporaryExchangeError, match="exchange unreachable or failing"):
        asyncio.run(run())
    assert lake.manifests() == []


def test_unreachable_exchange_is_a_clear_error(lake: CandleLake, quarantine: Quarantine) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]

    async def run() -> None:
        async with adapter(f"http://127.0.0.1:{closed_port}", max_retries=1) as exchange:
            await ingest(exchange, lake, quarantine, BTC)

    with pytest.raises(TemporaryExchangeError, match="unreachable"):
        asyncio.run(run())
    assert lake.manifests() == []


def test_unknown_symbol_and_unsupported_timeframe_write_nothing(
    exchange_server: LocalExchangeServer, lake: CandleLake, quarantine: Quarantine
) -> None:
    async def run(market: Market) -> None:
        async with adapter(exchange_server.url) as exchange:
            await ingest(exchange, lake, quarantine, market)

    with pytest.raises(ExchangeError, match="unknown symbol 'DOGE/USDT'"):
        asyncio.run(run(Market("binance", "DOGE/USDT", "1h")))
    with pytest.raises(ExchangeError, match="timeframe '7m' not supported"):
        asyncio.run(run(Market("binance", "BTC/USDT", "7m")))
    assert lake.manifests() == []


def test_a_bad_api_secret_is_rejected(exchange_server: LocalExchangeServer) -> None:
    async def check(secret: str) -> None:
        async with adapter(exchange_server.url, secret=secret) as exchange:
            await exchange.check_credentials()

    asyncio.run(check(EXCHANGE_API_SECRET))
    with pytest.raises(ExchangeError, match="authentication failed"):
        asyncio.run(check("not-the-secret"))


def test_malformed_candles_served_by_the_venue_are_quarantined(
    tmp_path: Path, lake: CandleLake, quarantine: Quarantine
) -> None:
    data_dir = tmp_path / "candles"
    data_dir.mkdir()
    candles = real_candles("BTCUSDT").head(48).rename(columns={"ts": "timestamp"})
    candles.loc[10, "high"] = candles.loc[10, "low"] - 1.0  # high < low
    candles.loc[20, "volume"] = -5.0  # negative volume
    with gzip.open(data_dir / "binance_BTCUSDT_1h.csv.gz", "wt") as handle:
        candles.to_csv(handle, index=False)
    start = int(candles["timestamp"].iloc[0])
    with running_exchange(data_dir=data_dir, start=start + 48 * HOUR_MS) as server:

        async def run(policy: str) -> IngestReport:
            async with adapter(server.url) as exchange:
                return await ingest(exchange, lake, quarantine, BTC, start_ms=start, on_invalid=policy)

        with pytest.raises(DataValidationError, match="2 of 48 rows failed"):
            asyncio.run(run("fail"))
        assert lake.manifests() == []
        report = asyncio.run(run("quarantine"))
    assert report.added == 46 and report.quarantined == 2
    kept = quarantine.read(BTC)
    reasons = dict(zip(kept["ts"], kept["reason"], strict=True))
    ts10, ts20 = int(candles["timestamp"].iloc[10]), int(candles["timestamp"].iloc[20])
    assert "high below open or close" in reasons[ts10]
    assert reasons[ts20] == "volume negative or not finite"


def test_reads_stay_within_the_configured_request_budget(exchange_server: LocalExchangeServer) -> None:
    import time

    # ccxt models Binance as 50 ms per cost unit, a klines request costing 0.4 units (Binance weight 2):
    # at a 10 % share a klines request may start only every 0.4 * 50 ms / 0.1 = 200 ms once the burst is spent.
    # The burst here is just what load_markets takes (exchangeInfo, 4 units), so every read after it is spaced.
    settings = ExchangeSettings(id="binance", api_url=exchange_server.url, rate_limit_share=0.1, rate_limit_burst=4)

    async def run() -> tuple[float, float]:
        async with ExchangeAdapter(settings) as exchange:
            await exchange.load_markets()
            started = time.perf_counter()
            for i in range(6):
                await exchange.fetch_ohlcv("BTC/USDT", "1h", MAY_2022 + i * 10 * HOUR_MS, 10)
            return time.perf_counter() - started, exchange.throttle_wait_s

    elapsed, waited = asyncio.run(run())
    assert elapsed >= 5 * 0.2 * 0.95  # six requests need at least five spacings
    assert waited > 0.5
