"""The candle lake and quarantine on S3, against a moto server the tests start (real boto3, real HTTP)."""

from __future__ import annotations

import asyncio
import uuid

import boto3
import pandas as pd
import pytest

from cta.config import ExchangeSettings
from cta.exchange import ExchangeAdapter
from cta.exchange_server import LocalExchangeServer
from cta.ingest import ingest_market
from cta.lake import CandleLake, Market
from cta.quarantine import Quarantine
from cta.storage import S3Storage, open_storage
from tests.exchange_fixtures import EXCHANGE_START_MS
from tests.factories import HOUR_MS, real_candles

pytestmark = [pytest.mark.integration, pytest.mark.production]
MARKET = Market("binance", "BTC/USDT", "1h")


@pytest.fixture
def bucket(moto_s3: str, aws_env: None) -> str:
    name = f"cta-test-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=moto_s3, region_name="us-east-1").create_bucket(Bucket=name)
    return name


def test_open_storage_picks_s3_for_s3_uris(moto_s3: str, bucket: str) -> None:
    storage = open_storage(f"s3://{bucket}/candles", s3_endpoint_url=moto_s3)
    assert isinstance(storage, S3Storage) and storage.uri == f"s3://{bucket}/candles"
    storage.put("a/b.txt", b"hello")
    assert storage.get("a/b.txt") == b"hello" and storage.get("missing") is None
    assert list(storage.list("a/")) == ["a/b.txt"]
    storage.delete("a/b.txt")
    assert list(storage.list()) == []


def test_lake_round_trip_idempotency_and_verify_on_s3(moto_s3: str, bucket: str) -> None:
    lake = CandleLake(open_storage(f"s3://{bucket}/lake", s3_endpoint_url=moto_s3))
    candles = real_candles(rows=24 * 45)
    assert lake.upsert(MARKET, candles).rows_added == len(candles)
    pd.testing.assert_frame_equal(lake.read(MARKET), candles)
    again = lake.upsert(MARKET, candles.iloc[100:900])
    assert again.rows_added == 0 and again.rows_unchanged == 800
    assert [m.month for m in lake.manifests(MARKET)] == ["2021-01", "2021-02"]
    assert lake.verify(MARKET) == []
    keys = list(lake.storage.list())
    assert all(k.startswith("candles/exchange=binance/symbol=BTC_USDT/timeframe=1h/month=") for k in keys)
    assert len(keys) == 4  # one manifest + one data file per month, no orphans


def test_ingest_from_the_local_exchange_into_an_s3_lake(
    moto_s3: str, bucket: str, exchange_server: LocalExchangeServer
) -> None:
    lake = CandleLake(open_storage(f"s3://{bucket}/lake", s3_endpoint_url=moto_s3))
    quarantine = Quarantine(open_storage(f"s3://{bucket}/quarantine", s3_endpoint_url=moto_s3))
    start = EXCHANGE_START_MS - 200 * HOUR_MS

    async def run() -> int:
        settings = ExchangeSettings(api_url=exchange_server.url, rate_limit_share=50)
        async with ExchangeAdapter(settings) as exchange:
            report = await ingest_market(
                exchange,
                lake,
                quarantine,
                MARKET,
                start_ms=start,
                end_ms=None,
                page_limit=1000,
                on_invalid="fail",
                results_dir=None,
                run_id="s3",
            )
            return report.added

    assert asyncio.run(run()) == 200
    assert asyncio.run(run()) == 0
    assert len(lake.read(MARKET)) == 200

    bad = real_candles(rows=3)
    quarantine.put(
        MARKET, bad, pd.Series(["reason a", "reason b", "reason c"]), run_id="run-1", detected_at_ms=EXCHANGE_START_MS
    )
    assert quarantine.read(MARKET)["reason"].tolist() == ["reason a", "reason b", "reason c"]
