"""`features_flow`: lake candles -> the one feature function -> "features" gate -> feature tables ->
Feast (offline source registered, online store materialised). A failing gate stops the flow before
anything is materialised."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from cta.components import configured_markets, make_lake
from cta.config import FeatureSettings, Settings
from cta.errors import ConfigError, DataValidationError
from cta.lake import CandleLake, Market
from features.registry import registry_version, select
from features.table import FeatureTable, feature_frame
from features.validation import validate_features


def checked_feature_names(settings: FeatureSettings) -> tuple[str, ...] | None:
    """The configured feature names, or ConfigError listing the valid ones."""
    try:
        select(settings.names)
    except ValueError as e:
        raise ConfigError("features.names", list(settings.names or ()), str(e)) from None
    return settings.names


@task(cache_policy=NO_CACHE, task_run_name="features {market}")
def build_market_features(lake: CandleLake, table: FeatureTable, market: Market, settings: Settings) -> dict[str, Any]:
    """Rebuild one market's feature table if its candles or the registry changed; gate it first."""
    names = settings.features.names
    snapshot = lake.snapshot(market)  # verified even when the table is current: a corrupt partition stops here
    lineage, candles = snapshot.lineage, snapshot.candles
    if not lineage:
        raise DataValidationError(f"{market}: no candles in the lake; run ingestion first")
    if table.is_current(market, lineage, names):
        manifest = table.manifest(market)
        return {"market": str(market), "status": "up to date", "rows": manifest.rows if manifest else 0}
    frame = feature_frame(candles, market, names)
    report = validate_features(frame, len(candles), names, settings.validation.results_dir)
    if not report.success:
        raise DataValidationError(f"{market}: {report.summary()}; nothing was written or materialised")
    manifest = table.write(market, frame, lineage, names)
    return {"market": str(market), "status": "rebuilt", **asdict(manifest)}


@task(cache_policy=NO_CACHE)
def materialize_online(settings: Settings, table: FeatureTable, markets: list[Market]) -> dict[str, Any]:
    """Register the Feast objects (idempotent) and materialise the newest feature rows online."""
    from features.feast_store import feature_store_for

    store = feature_store_for(settings.features)
    store.apply()
    newest = max(table.read(m)["event_timestamp"].max() for m in markets)
    store.materialize(newest.to_pydatetime())
    return {"online_store": settings.features.online_store, "materialized_until": newest.isoformat()}


@flow(name="features")
def features_flow(
    settings: Settings, symbols: list[str] | None = None, timeframes: list[str] | None = None
) -> dict[str, Any]:
    """Build, gate and publish features for the configured markets (or the given subset)."""
    logger = get_run_logger()
    checked_feature_names(settings.features)
    markets = configured_markets(settings, symbols, timeframes)
    lake, table = make_lake(settings), FeatureTable(settings.features.table_dir)
    built = [build_market_features(lake, table, market, settings) for market in markets]
    for item in built:
        logger.info("%s: %s (%d rows)", item["market"], item["status"], item["rows"])
    online = materialize_online(settings, table, markets)
    logger.info("materialised to the %s online store up to %s", online["online_store"], online["materialized_until"])
    return {"registry_version": registry_version(select(settings.features.names)), "markets": built, **online}
