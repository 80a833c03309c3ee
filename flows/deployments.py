"""Scheduled deployments, served by `cta flows serve` (schedules need a real Prefect server): ingestion per
timeframe, just after each candle closes, and each market's learning loop on `prefect.learn_cron`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from cta.candles import symbol_to_path
from cta.components import configured_markets
from cta.config import Settings
from cta.lake import Market
from cta.timeframes import timeframe_ms


@dataclass(frozen=True)
class IngestSchedule:
    name: str
    timeframe: str
    every: timedelta
    anchor: datetime  # runs fire at anchor + k * every: just after each candle closes


def ingest_schedules(timeframes: tuple[str, ...], offset_s: int) -> list[IngestSchedule]:
    """One schedule per timeframe, firing `offset_s` after every candle close (pure)."""
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    return [
        IngestSchedule(
            name=f"ingest-{tf}",
            timeframe=tf,
            every=timedelta(milliseconds=timeframe_ms(tf)),
            anchor=epoch + timedelta(seconds=offset_s),
        )
        for tf in timeframes
    ]


def ingest_deployments(settings: Settings) -> list[Any]:
    """One deployment of `ingest_flow` per configured timeframe. Each carries the settings it was served
    with as its `settings` parameter (JSON, secrets excluded: ingestion reads public market data)."""
    from prefect.schedules import Interval

    from flows.ingest import ingest_flow

    return [
        ingest_flow.to_deployment(
            name=s.name,
            schedules=[Interval(s.every, anchor_date=s.anchor, timezone="UTC")],
            parameters={"settings": settings.public_dict(), "timeframes": [s.timeframe]},
            description=f"Ingest closed {s.timeframe} candles of the configured symbols, {s.every} after close.",
            tags=["ingest", s.timeframe],
        )
        for s in ingest_schedules(settings.markets.timeframes, settings.prefect.schedule_offset_s)
    ]


def learn_deployment_name(market: Market) -> str:
    """`learn-binance-BTC_USDT-1h`: a deployment name without the `/` and `:` of a market id."""
    return f"learn-{market.exchange}-{symbol_to_path(market.symbol)}-{market.timeframe}"


def learn_deployments(settings: Settings) -> list[Any]:
    """One deployment of `learn_flow` per configured market, on the cron `prefect.learn_cron` (UTC), with a
    concurrency limit of one (a run waits while the market's previous one is still running). Each carries the
    served settings (secrets excluded) and its market as parameters."""
    from prefect.schedules import Cron

    from flows.learn import learn_flow

    return [
        learn_flow.to_deployment(
            name=learn_deployment_name(market),
            schedules=[Cron(settings.prefect.learn_cron, timezone="UTC")],
            parameters={"settings": settings.public_dict(), "market_id": str(market)},
            concurrency_limit=1,
            description=f"{market}: features, train, backtest, gate, promote; cron {settings.prefect.learn_cron} (UTC)",
            tags=["learn", str(market)],
        )
        for market in configured_markets(settings)
    ]


def all_deployments(settings: Settings) -> list[Any]:
    """Everything `cta flows serve` serves."""
    return [*ingest_deployments(settings), *learn_deployments(settings)]
