"""Ingestion from the local exchange's Coinbase dialect through CTA's own adapter and ingest (issue 18, item 2):
real ccxt `coinbase` over HTTP, 300 candles per request, newest first, seconds; the lake ends up with exactly the
bundled candles. A timeframe the venue lacks (4h) is refused before anything is fetched, naming the venue and what
it offers."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from cta.config import ExchangeSettings, Secrets
from cta.errors import ExchangeError
from cta.exchange import ExchangeAdapter, RetryPolicy
from cta.exchange_server import LocalExchangeServer
from cta.ingest import ingest_market
from cta.lake import CandleLake, Market
from cta.quarantine import Quarantine
from tests.exchange_fixtures import EXCHANGE_START_MS
from tests.factories import HOUR_MS, real_candles
from tests.integration.test_coinbase_dialect import coinbase_exchange

pytestmark = pytest.mark.integration

BTC = Market("coinbase", "BTC/USDT", "1h")


@pytest.fixture(scope="module")
def coinbase() -> Iterator[LocalExchangeServer]:
    with coinbase_exchange(None) as running:  # public candles need no key
        yield running


def adapter(url: str, page_limit: int) -> ExchangeAdapter:
    settings = ExchangeSettings(
        id="coinbase", api_url=url, rate_limit_share=50, timeout_ms=5_000, market_time="replay", page_limit=page_limit
    )
    return ExchangeAdapter(settings, Secrets(), RetryPolicy(max_retries=2, backoff_base_s=0.01), seed=1)


@pytest.mark.parametrize("page_limit", [300, 1000])
def test_a_coinbase_backfill_holds_exactly_the_venues_candles(
    coinbase: LocalExchangeServer, lake: CandleLake, quarantine: Quarantine, page_limit: int
) -> None:
    start = EXCHANGE_START_MS - 2_000 * HOUR_MS

    async def backfill() -> object:
        async with adapter(coinbase.url, page_limit) as exchange:
            return await ingest_market(
                exchange,
                lake,
                quarantine,
                BTC,
                start_ms=start,
                end_ms=None,
                page_limit=page_limit,
                on_invalid="fail",
                results_dir=None,
                run_id="coinbase",
                pages_in_flight=4,
            )

    asyncio.run(backfill())
    stored = lake.read(BTC)
    bundled = real_candles("BTCUSDT", "1h")
    expected = bundled[(bundled.ts >= start) & (bundled.ts < EXCHANGE_START_MS)]
    assert stored.ts.tolist() == expected.ts.tolist()  # 2,000 hours, each once, in order, up to the replay clock
    assert stored.close.tolist() == pytest.approx(expected.close.tolist())
    assert stored.volume.tolist() == pytest.approx(expected.volume.tolist())


def test_a_timeframe_the_venue_lacks_is_refused_before_anything_is_fetched(
    coinbase: LocalExchangeServer, lake: CandleLake, quarantine: Quarantine
) -> None:
    async def backfill() -> None:
        async with adapter(coinbase.url, 300) as exchange:
            await ingest_market(
                exchange,
                lake,
                quarantine,
                Market("coinbase", "BTC/USDT", "4h"),
                start_ms=EXCHANGE_START_MS - 100 * 4 * HOUR_MS,
                end_ms=None,
                page_limit=300,
                on_invalid="fail",
                results_dir=None,
                run_id="coinbase-4h",
            )

    with pytest.raises(ExchangeError, match=r"timeframe '4h' not supported by coinbase \(has: .*1h.*6h"):
        asyncio.run(backfill())
    assert lake.read(Market("coinbase", "BTC/USDT", "4h")).empty
