"""`refresh_flow`: what runs just after each candle closes: ingest the new candles (with the candle validation
gate), then rebuild and publish the features of the markets whose candles changed (offline table and the online
store the trading worker reads). Served per timeframe by the `refresh-<tf>` deployments."""

from __future__ import annotations

from typing import Any

from prefect import flow

from cta.config import Settings
from flows.features import features_flow
from flows.ingest import ingest_flow


@flow(name="refresh", flow_run_name="refresh {timeframes}")
async def refresh_flow(settings: Settings, timeframes: list[str] | None = None) -> dict[str, Any]:
    """Ingest, then features, for the configured markets of `timeframes` (all configured when None)."""
    ingest = await ingest_flow(settings, timeframes=timeframes)
    features = features_flow(settings, timeframes=timeframes)
    return {"ingest": ingest, "features": features}
