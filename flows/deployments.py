"""Scheduled deployments, served by `cta flows serve` (schedules need a real Prefect server)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from cta.config import Settings
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
